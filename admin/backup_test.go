package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
)

// TestReadStream: the client takes a backup stream only when it is whole: a header, items, and
// an end line whose counts match what came.
func TestReadStream(t *testing.T) {
	head := `{"gatekeeper_backup":1,"created":"2026-11-23T10:00:00Z","backend":"etcd","node":"n1","audit":true}` + "\n"
	user := `{"kind":"user","key":"alice","value":"e30="}` + "\n"
	event := `{"kind":"event","value":"e30="}` + "\n"
	tests := []struct {
		name    string
		stream  string
		wantErr string // "" = success
		want    int    // items passed on
	}{
		{"whole", head + user + event + `{"kind":"end","users":1,"events":1}` + "\n", "", 2},
		{"empty backup", head + `{"kind":"end"}` + "\n", "", 0},
		{"nothing", "", "no header", 0},
		{"no header", user, "header", 0},
		{"cut short", head + user, "ended before the backup did", 1},
		{"cut in a line", head + user[:10], "unreadable answer", 0},
		{"counts differ", head + user + `{"kind":"end","users":2}` + "\n", "counted 2 users", 1},
		{"after the end", head + `{"kind":"end"}` + "\n" + user, "more after the end line", 0},
		{"error line", head + user + `{"kind":"error","error":"the backup failed half-way"}` + "\n", "gatekeeper daemon: the backup failed half-way", 1},
		{"unknown kind", head + `{"kind":"group"}` + "\n", `unknown line kind "group"`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			h, err := readStream(strings.NewReader(tc.stream), func(store.Item) error { n++; return nil })
			if tc.wantErr == "" {
				if err != nil || h.Backend != "etcd" || h.Node != "n1" || h.Users+h.Events != tc.want {
					t.Fatalf("readStream = %+v, %v", h, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("readStream = %v, want an error with %q", err, tc.wantErr)
			}
			if n != tc.want {
				t.Errorf("%d items passed on, want %d", n, tc.want)
			}
		})
	}
}

// failingDump is a store whose Dump hands out n events and then fails.
type failingDump struct {
	store.Store
	n int
}

func (f failingDump) Dump(_ bool, fn func(store.Item) error) error {
	v, _ := store.EncodeEvent(store.Event{Kind: store.EventLoginOK, User: "alice", Detail: strings.Repeat("x", 200)}, t0)
	for range f.n {
		if err := fn(store.Item{Kind: store.ItemEvent, Value: v}); err != nil {
			return err
		}
	}
	return errors.New("disk on fire")
}

func TestBackupEndpoint(t *testing.T) {
	d := startDaemonWith(t, nil, func(s *Server) { s.Backend, s.Node = "bolt", "login1" })
	if err := d.st.Update("alice", func(u *store.User) error { u.State, u.Secret = store.StateActive, []byte("k"); return nil }); err != nil {
		t.Fatal(err)
	}
	c := NewClient(d.path)
	var items []store.Item
	h, err := c.Backup(context.Background(), false, func(it store.Item) error { items = append(items, it); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != BackupVersion || h.Backend != "bolt" || h.Node != "login1" || !h.Created.Equal(t0.Truncate(time.Second)) ||
		h.Audit || h.Users != 1 || len(items) != 1 || items[0].Key != "alice" {
		t.Errorf("Backup = %+v, %d items", h, len(items))
	}
	d.log.waitFor(t, func(rec map[string]any) bool { return rec["msg"] == "backup" && rec["users"] == float64(1) })

	hc := httpClient(d.path)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, msg                string
	}{
		{"bad flag", "GET", "/v1/backup?audit=maybe", "", 400, codeBadRequest, `audit="maybe"`},
		{"bad force", "POST", "/v1/restore?force=2x", "", 400, codeBadRequest, `force="2x"`},
		{"not a backup", "POST", "/v1/restore", "{}\n", 400, codeBadBackup, "line 1: not a gatekeeper backup header"},
		{"bad line", "POST", "/v1/restore", `{"gatekeeper_backup":1,"users":1}` + "\n" + `{"kind":"user","key":"-x","value":"e30="}` + "\n",
			400, codeBadBackup, "line 2: invalid user name"},
		{"record that does not verify", "POST", "/v1/restore", `{"gatekeeper_backup":1,"users":1}` + "\n" + `{"kind":"user","key":"bob","value":"e30="}` + "\n",
			400, codeBadBackup, "line 2: "},
		{"existing user", "POST", "/v1/restore", string(backupOf(t, h, items)), 409, codeExists, "user already has a record: alice (restore --force overwrites them)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://gatekeeper"+tc.path, strings.NewReader(tc.body))
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var eb errorBody
			b, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(b, &eb); err != nil || resp.StatusCode != tc.status || eb.Code != tc.code || !strings.Contains(eb.Error, tc.msg) {
				t.Errorf("%s %s = %d %s, want %d %s with %q", tc.method, tc.path, resp.StatusCode, b, tc.status, tc.code, tc.msg)
			}
		})
	}
	if users, _ := d.st.List(); len(users) != 1 {
		t.Errorf("refused restores left %d users, want alice alone", len(users))
	}

	// A dump that fails before anything went out is a plain error answer; one that fails
	// half-way ends the stream with an error line. Neither passes for a backup.
	d.srv.Store = failingDump{Store: d.st}
	_, err = c.Backup(context.Background(), true, func(store.Item) error { return nil })
	if err == nil || !strings.Contains(err.Error(), internalMessage) {
		t.Errorf("Backup of a failing store = %v", err)
	}
	d.srv.Store = failingDump{Store: d.st, n: 2000}
	n := 0
	_, err = c.Backup(context.Background(), true, func(store.Item) error { n++; return nil })
	if err == nil || !strings.Contains(err.Error(), "the backup failed half-way") || n == 0 {
		t.Errorf("Backup of a store failing half-way = %v after %d items", err, n)
	}
	d.log.waitFor(t, func(rec map[string]any) bool {
		return rec["msg"] == "backup failed" && strings.Contains(fmt.Sprint(rec["err"]), "disk on fire")
	})
}

// backupOf is the backup file of h and items.
func backupOf(t *testing.T, h BackupHeader, items []store.Item) []byte {
	t.Helper()
	b := h.MarshalLine()
	for _, it := range items {
		l, err := json.Marshal(it)
		if err != nil {
			t.Fatal(err)
		}
		b = append(append(b, l...), '\n')
	}
	return b
}

// TestBackupCallers: the backup and restore endpoints are behind the same authorization as the
// rest of the admin API: a caller outside admin.groups gets nothing.
func TestBackupCallers(t *testing.T) {
	needRoot(t)
	d := startDaemonWith(t, nil, func(s *Server) { s.Groups = []string{"root"} })
	openUp(t, d.path)
	if out := runHelper(t, nil, "backup", d.path); out != "ok" {
		t.Errorf("backup as root: %q", out)
	}
	want := "forbidden: not allowed to use the admin socket: uid 65534 is not root and not in admin.groups [root]"
	if out := runHelper(t, &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}, "backup", d.path); out != want {
		t.Errorf("backup as nobody: %q, want %q", out, want)
	}
	if out := runHelper(t, &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}, "restore", d.path); out != want {
		t.Errorf("restore as nobody: %q, want %q", out, want)
	}
}

// loadFails is a store whose Load fails with err.
type loadFails struct {
	store.Store
	err error
}

func (l loadFails) Load([]store.Item, bool) (store.LoadResult, error) {
	return store.LoadResult{}, l.err
}

// TestRestoreSaysWhatWasWritten: a restore's error says what was written, through the daemon
// too: nothing, or for a store that stopped part-way how much, whatever the cause.
func TestRestoreSaysWhatWasWritten(t *testing.T) {
	d := startDaemonWith(t, nil, nil)
	c := NewClient(d.path)
	f, err := ParseBackup([]byte(`{"gatekeeper_backup":1,"users":0}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	partway := func(cause error) error {
		return &store.LoadError{Written: store.LoadResult{Users: 2, Events: 298}, Of: store.LoadResult{Users: 2, Events: 1000}, Err: cause}
	}
	written := "2 of 2 users, 0 of 0 tickets and 298 of 1000 events were written; run the same restore again, without --force"
	tests := []struct {
		name    string
		err     error
		is      error
		want    string
		notWant string
	}{
		{"part-way, cluster gone", partway(fmt.Errorf("etcd: restore: %w", store.ErrUnavailable)), store.ErrUnavailable, written, "nothing was written"},
		{"part-way, other failure", partway(errors.New("etcd: restore: request too large")), nil, "; the restore stopped part-way: " + written, "nothing was written"},
		{"part-way, user linked meanwhile", partway(fmt.Errorf("%w: a user was linked", store.ErrExists)), store.ErrExists, "see who linked meanwhile", "nothing was written"},
		{"before any write", fmt.Errorf("etcd: read users: %w", store.ErrUnavailable), store.ErrUnavailable, "read users: store unavailable; nothing was written", ""},
		{"existing user", store.ExistsError([]string{"alice"}), store.ErrExists, "alice (restore --force overwrites them); nothing was written", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, via := range []string{"directly", "daemon"} {
				var err error
				if via == "daemon" {
					d.srv.Store = loadFails{Store: d.st, err: tc.err}
					_, err = c.Restore(context.Background(), f, true)
				} else {
					_, err = Restore(loadFails{Store: d.st, err: tc.err}, f, true, "test", d.srv.log())
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) || tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) ||
					tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("%s: Restore = %v, want %q (and %v)", via, err, tc.want, tc.is)
				}
			}
		})
	}
}

// damagedDump is a store whose Dump hands out one good record and n damaged ones.
type damagedDump struct {
	store.Store
	n int
}

func (d damagedDump) Dump(_ bool, fn func(store.Item) error) error {
	if err := fn(store.Item{Kind: store.ItemUser, Key: "alice", Value: []byte("{}")}); err != nil {
		return err
	}
	for i := range d.n {
		it := store.Item{Kind: store.ItemUser, Key: fmt.Sprintf("u%d", i), Value: []byte("{}"), Damaged: errors.New("fails its integrity check")}
		if err := fn(it); err != nil {
			return err
		}
	}
	return nil
}

// TestBackupLeavesOutDamaged: damaged items are left out and named, at most maxLeftOut of them
// in the header (which must stay one readable line), the rest counted.
func TestBackupLeavesOutDamaged(t *testing.T) {
	for _, n := range []int{1, maxLeftOut + 50} {
		var got []string
		h, err := Backup(damagedDump{n: n}, BackupHeader{}, func(it store.Item) error { got = append(got, it.Key); return nil })
		if err != nil || len(got) != 1 || h.Users != 1 || h.LeftOutCount() != n || len(h.LeftOut) != min(n, maxLeftOut) {
			t.Fatalf("n=%d: Backup = %+v (%d named), %v; passed on %q", n, h.Users, len(h.LeftOut), err, got)
		}
		if len(h.MarshalLine()) > maxBackupLine/10 {
			t.Errorf("n=%d: header of %d bytes", n, len(h.MarshalLine()))
		}
		s := h.LeftOutSummary()
		if !strings.HasPrefix(s, plural(n, "damaged record")+" left out: user u0 (fails its integrity check; ") ||
			n > 20 && !strings.HasSuffix(s, fmt.Sprintf("; and %d more", n-20)) {
			t.Errorf("n=%d: summary %.200q", n, s)
		}
	}
}
