package admin

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
	"gatekeeper/gatekeeper/totp"
)

// importSecret is a 160-bit key in the form google_authenticator files hold it.
const importSecret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

func TestImport(t *testing.T) {
	var mu sync.Mutex
	var resets []string
	d := startDaemonWith(t, nil, func(s *Server) {
		s.OnReset = func(user string) int {
			mu.Lock()
			defer mu.Unlock()
			resets = append(resets, user)
			return 2
		}
	})
	c := NewClient(d.path)
	ctx := context.Background()
	scratch := []string{"12345678", "87654321"}
	now := totp.Step(t0)

	// The pending user's link is replaced without force: it was never confirmed.
	if _, _, err := c.Begin(ctx, "bob"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		user     string
		req      ImportRequest
		wantErr  string
		wantIs   error
		want     ImportResult
		wantLast uint64
	}{
		{name: "not base32", user: "alice", req: ImportRequest{SecretBase32: "not base32!"}, wantErr: "cannot import: the secret is not base32"},
		{name: "partial byte", user: "alice", req: ImportRequest{SecretBase32: importSecret + "A"}, wantErr: "the secret is not base32"},
		{name: "short secret", user: "alice", req: ImportRequest{SecretBase32: "GEZDGNBV"}, wantErr: "the secret is 40 bits, want 80 to 512"},
		{name: "no secret", user: "alice", req: ImportRequest{}, wantErr: "cannot import: no secret"},
		{name: "bad scratch", user: "alice", req: ImportRequest{SecretBase32: importSecret, Scratch: []string{"12345678", "1234"}}, wantErr: "scratch code 2 is not 8 digits"},
		{name: "too many scratch", user: "alice", req: ImportRequest{SecretBase32: importSecret, Scratch: slices.Repeat([]string{"12345678"}, 11)}, wantErr: "11 scratch codes, at most 10"},
		{name: "future step", user: "alice", req: ImportRequest{SecretBase32: importSecret, LastStep: now + 1000}, wantErr: "check this machine's clock"},
		{name: "bad name", user: "a/b", req: ImportRequest{SecretBase32: importSecret}, wantIs: store.ErrBadName},
		{
			name:     "import",
			user:     "alice",
			req:      ImportRequest{SecretBase32: strings.ToLower(importSecret), LastStep: now - 3, Scratch: scratch},
			want:     ImportResult{User: "alice", RecoveryCodes: 2},
			wantLast: now - 3,
		},
		{name: "already linked", user: "alice", req: ImportRequest{SecretBase32: importSecret}, wantIs: enroll.ErrAlreadyLinked},
		{
			name:     "force keeps the newer last step",
			user:     "alice",
			req:      ImportRequest{SecretBase32: importSecret, LastStep: now - 10, Force: true},
			want:     ImportResult{User: "alice", Replaced: true, SessionsEnded: 2},
			wantLast: now - 3,
		},
		{name: "pending", user: "bob", req: ImportRequest{SecretBase32: importSecret, Scratch: scratch}, want: ImportResult{User: "bob", RecoveryCodes: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := d.st.Get(tt.user)
			res, err := c.Import(ctx, tt.user, tt.req)
			if tt.wantErr != "" || tt.wantIs != nil {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Fatalf("error = %v, want %q / %v", err, tt.wantErr, tt.wantIs)
				}
				if after, _ := d.st.Get(tt.user); after.State != before.State || !after.EnrolledAt.Equal(before.EnrolledAt) {
					t.Errorf("refused import changed %s: %+v", tt.user, after)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res != tt.want {
				t.Errorf("result = %+v, want %+v", res, tt.want)
			}
			u, err := d.st.Get(tt.user)
			if err != nil || u.State != store.StateActive || !u.EnrolledAt.Equal(t0) || !u.PendingSince.IsZero() ||
				len(u.Recovery) != tt.want.RecoveryCodes || u.LastStep != tt.wantLast {
				t.Errorf("%s = %+v, %v", tt.user, u, err)
			}
			if ev := auditOf(t, d.st, tt.user); !strings.HasPrefix(ev[len(ev)-1], "import/"+me+"/google_authenticator device imported") {
				t.Errorf("audit = %v", ev)
			}
		})
	}

	// The imported key is the one the app has: its code logs in, a scratch code recovers once.
	err := d.st.Update("bob", func(u *store.User) error {
		if _, err := totp.Verify(u.Secret, codeAt(t, importSecret, t0), t0, 1, u.LastStep); err != nil {
			t.Errorf("code of the imported key: %v", err)
		}
		if !enroll.VerifyRecovery(u, "1234 5678") || enroll.VerifyRecovery(u, "12345678") {
			t.Error("scratch code does not work exactly once as a recovery code")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if !slices.Equal(resets, []string{"alice"}) {
		t.Errorf("sessions ended for %v, want only alice's on the forced import", resets)
	}
	mu.Unlock()
	if strings.Contains(strings.ToUpper(d.log.String()), importSecret) {
		t.Error("the daemon's log holds the imported secret")
	}
}

func TestImportRejectsUnknownFields(t *testing.T) {
	d := startDaemon(t)
	resp, err := httpClient(d.path).Post("http://x/v1/users/alice/import", "application/json",
		strings.NewReader(`{"secret_base32":"`+importSecret+`","hotp_counter":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", resp.StatusCode)
	}
	if u, _ := d.st.Get("alice"); u.State != store.StateNone {
		t.Errorf("alice = %s", u.State)
	}
}

func TestImportWithoutReset(t *testing.T) {
	// Without the OnReset hook a forced import still works; no sessions are counted.
	d := startDaemon(t)
	c := NewClient(d.path)
	for _, force := range []bool{false, true} {
		res, err := c.Import(context.Background(), "alice", ImportRequest{SecretBase32: importSecret, Force: force})
		if err != nil || res.Replaced != force || res.SessionsEnded != 0 {
			t.Errorf("import (force %v) = %+v, %v", force, res, err)
		}
	}
}
