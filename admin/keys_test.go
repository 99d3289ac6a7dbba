package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/internal/keytest"
)

func TestKeysAPI(t *testing.T) {
	var mu sync.Mutex
	var ended []string
	d := startDaemonWith(t, nil, func(s *Server) {
		s.Enroll.KeyPolicy = enroll.KeyPolicy{AutomationMaxLifetime: 48 * time.Hour}
		s.Enroll.EndKeySessions = func(user, fp string) int {
			mu.Lock()
			defer mu.Unlock()
			ended = append(ended, user+" "+fp)
			return 2
		}
	})
	c := NewClient(d.path)
	ctx := context.Background()

	if keys, err := c.Keys(ctx, "alice"); err != nil || len(keys) != 0 {
		t.Fatalf("Keys of a user without a record = %+v, %v", keys, err)
	}
	if _, _, body := rawDo(t, d.path, "GET", "/v1/users/alice/keys"); strings.TrimSpace(string(body)) != `{"user":"alice","keys":[]}` {
		t.Errorf("no keys encode as %s", body)
	}

	personal, personalFP := keytest.PublicKey(t, "alice@laptop")
	k, err := c.AddKey(ctx, "alice", AddKeyRequest{PublicKey: personal})
	if err != nil {
		t.Fatalf("AddKey: %v", err)
	}
	if k.Fingerprint != personalFP || k.Label != "alice@laptop" || k.AddedBy != me || !k.AddedAt.Equal(t0) || !k.Expires.IsZero() || k.Automation {
		t.Errorf("added key = %+v", k)
	}
	auto, autoFP := keytest.PublicKey(t, "")
	k, err = c.AddKey(ctx, "alice", AddKeyRequest{PublicKey: auto, Label: "backup job", Automation: true,
		From: []string{"10.1.2.3", "192.0.2.0/24"}, Command: "rsync --server"})
	if err != nil {
		t.Fatalf("AddKey(automation): %v", err)
	}
	if !k.Automation || !slices.Equal(k.From, []string{"10.1.2.3/32", "192.0.2.0/24"}) || !k.Expires.Equal(t0.Add(48*time.Hour)) ||
		k.Command != "rsync --server" || k.Label != "backup job" {
		t.Errorf("automation key = %+v", k)
	}

	errTests := []struct {
		name   string
		user   string
		req    AddKeyRequest
		want   error
		status int
	}{
		{"duplicate", "alice", AddKeyRequest{PublicKey: personal}, enroll.ErrKeyExists, http.StatusConflict},
		{"not a key", "alice", AddKeyRequest{PublicKey: "ssh-ed25519 AAAA"}, enroll.ErrBadKey, http.StatusBadRequest},
		{"automation without networks", "alice", AddKeyRequest{PublicKey: auto, Automation: true}, enroll.ErrBadKey, http.StatusBadRequest},
		{"automation too long", "bob", AddKeyRequest{PublicKey: auto, Automation: true, From: []string{"10.1.0.0/16"},
			Expires: t0.Add(49 * time.Hour)}, enroll.ErrBadKey, http.StatusBadRequest},
		{"expired", "bob", AddKeyRequest{PublicKey: auto, Expires: t0.Add(-time.Hour)}, enroll.ErrBadKey, http.StatusBadRequest},
		{"bad name", "-x", AddKeyRequest{PublicKey: auto}, store.ErrBadName, 0},
	}
	for _, tt := range errTests {
		if _, err := c.AddKey(ctx, tt.user, tt.req); !errors.Is(err, tt.want) {
			t.Errorf("%s: AddKey = %v, want %v", tt.name, err, tt.want)
		}
	}
	status, _, _ := rawDoBody(t, d.path, "POST", "/v1/users/alice/keys", `{"public_key":"x","secret":1}`)
	if status != http.StatusBadRequest {
		t.Errorf("unknown field: status %d", status)
	}

	keys, err := c.Keys(ctx, "alice")
	if err != nil || len(keys) != 2 || keys[0].Fingerprint != personalFP || keys[1].Fingerprint != autoFP {
		t.Fatalf("Keys = %+v, %v", keys, err)
	}
	info, err := c.User(ctx, "alice")
	if err != nil || len(info.Keys) != 2 || info.State != store.StateNone {
		t.Errorf("User(alice) = %+v, %v; want her two keys", info, err)
	}

	// Revoking drops the key and its remembered devices, and ends its sessions.
	if err := d.st.Update("alice", func(u *store.User) error {
		u.Remembered = []store.Remembered{
			{Fingerprint: autoFP, Network: "192.0.2.0/24", Since: t0, Until: t0.Add(time.Hour)},
			{Fingerprint: personalFP, Network: "198.51.100.0/24", Since: t0, Until: t0.Add(time.Hour)},
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	res, err := c.RevokeKey(ctx, "alice", autoFP)
	if err != nil || res.SessionsEnded != 2 || res.Key.Fingerprint != autoFP || res.User != "alice" {
		t.Fatalf("RevokeKey = %+v, %v", res, err)
	}
	mu.Lock()
	if !slices.Equal(ended, []string{"alice " + autoFP}) {
		t.Errorf("EndKeySessions calls %q", ended)
	}
	mu.Unlock()
	u, _ := d.st.Get("alice")
	if len(u.Keys) != 1 || len(u.Remembered) != 1 || u.Remembered[0].Fingerprint != personalFP {
		t.Errorf("after revoke: keys %+v, remembered %+v", u.Keys, u.Remembered)
	}
	if _, err := c.RevokeKey(ctx, "alice", autoFP); !errors.Is(err, enroll.ErrNoKey) {
		t.Errorf("second revoke = %v, want ErrNoKey", err)
	}

	audit := auditOf(t, d.st, "alice")
	wantPrefixes := []string{"key_added/" + me + "/" + personalFP, "key_added/" + me + "/" + autoFP + ` "backup job", automation, from 10.1.2.3/32,192.0.2.0/24`,
		"key_revoked/" + me + "/" + autoFP}
	if len(audit) != len(wantPrefixes) {
		t.Fatalf("audit = %q", audit)
	}
	for i, w := range wantPrefixes {
		if !strings.HasPrefix(audit[i], w) {
			t.Errorf("audit[%d] = %q, want prefix %q", i, audit[i], w)
		}
	}
	if !strings.HasSuffix(audit[2], "; 2 live sessions ended") {
		t.Errorf("revoke audit %q does not count the sessions", audit[2])
	}
}

// rawDoBody is rawDo with a JSON body.
func rawDoBody(t *testing.T, path, method, url, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://x"+url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient(path).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := make([]byte, 4096)
	n, _ := resp.Body.Read(b)
	return resp.StatusCode, resp.Header, b[:n]
}

func TestImportKeysAPI(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	ctx := context.Background()
	k1, fp1 := keytest.PublicKey(t, "one")
	k2, fp2 := keytest.PublicKey(t, "two")
	k3, fp3 := keytest.PublicKey(t, "three")
	if _, err := c.AddKey(ctx, "alice", AddKeyRequest{PublicKey: k3}); err != nil {
		t.Fatal(err)
	}
	file := fmt.Sprintf(`# alice's keys

%s
from="10.0.0.0/8,192.0.2.7",command="echo hi",no-pty,no-agent-forwarding %s
from="*.example.org" %s
%s
expiry-time="20000101" %s
not a key line
`, k1, k2, k1, k3, k1)
	res, err := c.ImportKeys(ctx, "alice", []byte(file))
	if err != nil {
		t.Fatalf("ImportKeys: %v", err)
	}
	if res.User != "alice" || len(res.Added) != 2 || len(res.Skipped) != 4 {
		t.Fatalf("ImportKeys = %+v", res)
	}
	a := res.Added
	if a[0].Line != 3 || a[0].Fingerprint != fp1 || a[0].Label != "one" || len(a[0].Dropped) != 0 {
		t.Errorf("added[0] = %+v", a[0])
	}
	if a[1].Line != 4 || a[1].Fingerprint != fp2 || !slices.Equal(a[1].From, []string{"10.0.0.0/8", "192.0.2.7/32"}) ||
		a[1].Command != "echo hi" || !slices.Equal(a[1].Dropped, []string{"no-pty", "no-agent-forwarding"}) {
		t.Errorf("added[1] = %+v", a[1])
	}
	sk := res.Skipped
	checks := []struct {
		line   int
		fp     string
		reason string
	}{
		{5, fp1, "only addresses and CIDR prefixes"},
		{6, fp3, "already registered"},
		{7, fp1, "in the past"}, // before being a duplicate
		{8, "", "not an authorized_keys key line"},
	}
	for i, ch := range checks {
		if sk[i].Line != ch.line || sk[i].Fingerprint != ch.fp || !strings.Contains(sk[i].Reason, ch.reason) {
			t.Errorf("skipped[%d] = %+v, want line %d, fingerprint %q, reason with %q", i, sk[i], ch.line, ch.fp, ch.reason)
		}
	}
	u, _ := d.st.Get("alice")
	if len(u.Keys) != 3 || u.Keys[1].AddedBy != me {
		t.Errorf("keys after import = %+v", u.Keys)
	}

	// A file larger than the daemon takes is refused before it is sent.
	if _, err := c.ImportKeys(ctx, "alice", make([]byte, enroll.MaxKeyFileSize+1)); !errors.Is(err, enroll.ErrBadKey) {
		t.Errorf("huge file: %v", err)
	}
	if _, err := c.ImportKeys(ctx, "a b", []byte(k1)); !errors.Is(err, store.ErrBadName) {
		t.Errorf("bad name: %v", err)
	}
}

func TestResetKeepsKeys(t *testing.T) {
	tests := []struct {
		name      string
		linked    bool
		keys      bool // --keys
		sessions  int
		want      ResetResult
		wantErr   error
		wantAudit string
		keysLeft  int
	}{
		{name: "linked, keys kept", linked: true,
			want:      ResetResult{User: "alice", HadRecord: true, KeysKept: 2, RememberedForgotten: 1},
			wantAudit: "device link and recovery codes removed; 2 SSH keys kept; 1 remembered device forgotten; 0 live sessions ended", keysLeft: 2},
		{name: "linked, keys removed", linked: true, keys: true, sessions: 1,
			want:      ResetResult{User: "alice", HadRecord: true, KeysRemoved: 2, RememberedForgotten: 1, SessionsEnded: 1},
			wantAudit: "device link and recovery codes removed; 2 SSH keys removed; 1 remembered device forgotten; 1 live session ended"},
		{name: "keys only, keys removed", keys: true,
			want:      ResetResult{User: "alice", KeysRemoved: 2, RememberedForgotten: 1},
			wantAudit: "no device was linked; 2 SSH keys removed; 1 remembered device forgotten; 0 live sessions ended"},
		{name: "keys only, remembered forgotten",
			want:      ResetResult{User: "alice", KeysKept: 2, RememberedForgotten: 1},
			wantAudit: "no device was linked; 2 SSH keys kept; 1 remembered device forgotten; 0 live sessions ended", keysLeft: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemonWith(t, nil, func(s *Server) { s.OnReset = func(string) int { return tt.sessions } })
			c := NewClient(d.path)
			ctx := context.Background()
			var lastStep uint64
			if tt.linked {
				link(t, d, c, "alice")
				u, _ := d.st.Get("alice")
				lastStep = u.LastStep
			}
			var fps []string
			for _, label := range []string{"a", "b"} {
				line, fp := keytest.PublicKey(t, label)
				if _, err := c.AddKey(ctx, "alice", AddKeyRequest{PublicKey: line}); err != nil {
					t.Fatal(err)
				}
				fps = append(fps, fp)
			}
			if err := d.st.Update("alice", func(u *store.User) error {
				u.Remembered = []store.Remembered{{Fingerprint: fps[0], Network: "192.0.2.0/24", Since: t0, Until: t0.Add(time.Hour)}}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			res, err := c.ResetWith(ctx, "alice", ResetOptions{Keys: tt.keys})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Reset = %+v, %v; want %v", res, err, tt.wantErr)
				}
				return
			}
			if err != nil || res != tt.want {
				t.Fatalf("Reset = %+v, %v; want %+v", res, err, tt.want)
			}
			u, err := d.st.Get("alice")
			if err != nil || u.State != store.StateNone || len(u.Recovery) != 0 || len(u.Remembered) != 0 || len(u.Keys) != tt.keysLeft ||
				!u.EnrolledAt.IsZero() {
				t.Errorf("after reset %+v, %v", u, err)
			}
			if tt.keysLeft > 0 && u.LastStep != lastStep {
				t.Errorf("last used step %d after reset, want %d kept", u.LastStep, lastStep)
			}
			audit := auditOf(t, d.st, "alice")
			if want := "reset/" + me + "/" + tt.wantAudit; audit[len(audit)-1] != want {
				t.Errorf("audit ends with %q, want %q", audit[len(audit)-1], want)
			}
			// The user can link again, with a code of a later step: the last used step stayed.
			d.clock.Add(30 * time.Second)
			link(t, d, c, "alice")
		})
	}
}

func TestResetNothingButKeys(t *testing.T) {
	d := startDaemonWith(t, nil, func(s *Server) { s.OnReset = func(string) int { return 0 } })
	c := NewClient(d.path)
	ctx := context.Background()
	line, _ := keytest.PublicKey(t, "")
	if _, err := c.AddKey(ctx, "alice", AddKeyRequest{PublicKey: line}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Reset(ctx, "alice")
	if !errors.Is(err, ErrNoSuchUser) || !strings.Contains(err.Error(), "1 SSH key kept; --keys removes them") {
		t.Errorf("reset of a user with keys only = %v, want ErrNoSuchUser mentioning --keys", err)
	}
	if u, _ := d.st.Get("alice"); len(u.Keys) != 1 {
		t.Errorf("keys after a refused reset: %+v", u.Keys)
	}
	if status, _, _ := rawDo(t, d.path, "POST", "/v1/users/alice/reset?keys=maybe"); status != http.StatusBadRequest {
		t.Errorf("keys=maybe: status %d", status)
	}
	if status, _, _ := rawDo(t, d.path, "POST", "/v1/users/alice/reset?keys=1"); status != http.StatusOK {
		t.Errorf("keys=1: status %d", status)
	}
	if u, _ := d.st.Get("alice"); len(u.Keys) != 0 {
		t.Errorf("keys after reset --keys: %+v", u.Keys)
	}
}
