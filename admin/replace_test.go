package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// linkedSecret links user through c and returns the secret the daemon showed.
func linkedSecret(t *testing.T, d *daemon, c *Client, user string) string {
	t.Helper()
	l, b, err := c.Begin(context.Background(), user)
	if err != nil {
		t.Fatalf("Begin(%s): %v", user, err)
	}
	if _, err := c.Confirm(context.Background(), user, b, codeAt(t, l.Secret, d.clock.Now())); err != nil {
		t.Fatalf("Confirm(%s): %v", user, err)
	}
	return l.Secret
}

// TestConsoleReplaceOverSocket: `gatekeeper enroll --replace` against a daemon: the console
// replacement flow with its own Client, the clock message and the old-phone hint coming back
// over the socket, the audit log naming the caller and the console.
func TestConsoleReplaceOverSocket(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	old := linkedSecret(t, d, c, "alice")
	d.clock.Add(time.Minute)

	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- enroll.TerminalReplace(context.Background(), NewClient(d.path), "alice", inR, outW)
		outW.Close()
	}()
	shown := readUntil(t, outR, "Code from your app: ")
	next := secretOf(t, shown)
	if next == old {
		t.Fatal("the replacement shows the old secret")
	}
	now := d.clock.Now()
	io.WriteString(inW, codeAt(t, next, now.Add(4*time.Minute))+"\n")
	// The pipes are unbuffered: read each answer up to the next prompt before typing again.
	readUntil(t, outR, "Your phone's clock is about 4 minutes fast. Turn on automatic date and time on the phone, then try a new code.\nCode from your app: ")
	io.WriteString(inW, codeAt(t, old, now)+"\n")
	readUntil(t, outR, "That code is from the phone linked now. Type a code from the app on the new phone.\nCode from your app: ")
	io.WriteString(inW, codeAt(t, next, now)+"\n")
	rest, _ := io.ReadAll(outR)
	if err := <-done; err != nil || !strings.Contains(string(rest), "Device replaced for alice.") {
		t.Fatalf("console replacement: %v\n%s%s", err, shown, rest)
	}
	if n := strings.Count(string(rest), "\n    "); n != enroll.RecoveryCodes {
		t.Errorf("%d recovery codes printed, want %d:\n%s", n, enroll.RecoveryCodes, rest)
	}
	if strings.Contains(d.log.String(), next) {
		t.Error("the daemon's log shows the new secret")
	}
	ev, err := d.st.Events(store.EventQuery{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ev[3:] {
		got = append(got, e.Kind+"/"+e.Actor+"/"+e.Door)
	}
	want := []string{store.EventReplaceStarted + "/" + me + "/console", store.EventQRShown + "/" + me + "/console",
		store.EventDeviceReplaced + "/" + me + "/console"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("audit = %v\nwant    %v", got, want)
	}
	info, err := c.User(context.Background(), "alice")
	if err != nil || info.State != store.StateActive || !info.EnrolledAt.Equal(now) || !info.ReplacePendingSince.IsZero() ||
		info.DriftSteps != 0 || info.RecoveryCodesLeft != enroll.RecoveryCodes {
		t.Errorf("User after the replacement = %+v, %v", info, err)
	}
}

// TestReplaceClientErrors: the replacement's errors travel over the socket as the Service
// returned them.
func TestReplaceClientErrors(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	ctx := context.Background()
	old := linkedSecret(t, d, c, "alice")
	linkedSecret(t, d, c, "bob")
	d.clock.Add(time.Minute)
	l, b, err := c.BeginReplace(ctx, "alice")
	if err != nil {
		t.Fatalf("BeginReplace: %v", err)
	}
	_, bobB, err := c.BeginReplace(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	now := d.clock.Now()

	tests := []struct {
		name string
		call func() error
		want error
		msg  string
	}{
		{"not linked", func() error { _, _, err := c.BeginReplace(ctx, "carol"); return err }, enroll.ErrNotLinked, "no device is linked for carol"},
		{"pending", func() error { _, _, err := c.BeginReplace(ctx, "alice"); return err }, enroll.ErrPending, "expires at"},
		{"other binding", func() error { _, err := c.ConfirmReplace(ctx, "alice", bobB, codeAt(t, l.Secret, now)); return err },
			enroll.ErrStartedElsewhere, "can only be confirmed"},
		{"old phone", func() error { _, err := c.ConfirmReplace(ctx, "alice", b, codeAt(t, old, now)); return err },
			enroll.ErrCurrentDeviceCode, "from the phone linked now"},
		{"plain wrong", func() error { _, err := c.ConfirmReplace(ctx, "alice", b, "12ab56"); return err }, enroll.ErrBadCode, "did not match"},
		{"cancel by another", func() error { return c.CancelReplace(ctx, "alice", bobB) }, enroll.ErrStartedElsewhere, "can cancel it"},
		{"confirm not linked", func() error { _, err := c.ConfirmReplace(ctx, "carol", "", "123456"); return err }, enroll.ErrNotLinked, "carol"},
		{"bad name", func() error { _, _, err := c.BeginReplace(ctx, "-x"); return err }, store.ErrBadName, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error = %v, want %v saying %q", err, tt.want, tt.msg)
			}
		})
	}

	// A clock error comes back as one, with its steps and message.
	_, err = c.ConfirmReplace(ctx, "alice", b, codeAt(t, l.Secret, now.Add(-3*time.Minute)))
	ce, ok := errors.AsType[*enroll.ClockError](err)
	if !ok || ce.Steps != -6 || !errors.Is(err, enroll.ErrBadCode) || !strings.Contains(err.Error(), "about 3 minutes slow") {
		t.Errorf("ConfirmReplace 3 minutes behind = %#v, want a clock error of -6 steps", err)
	}
	// So does the raw answer, for other clients.
	status, body := postJSON(t, d.path, "/v1/enroll/replace/confirm",
		`{"user":"alice","binding":"`+string(b)+`","code":"`+codeAt(t, l.Secret, now.Add(4*time.Minute))+`"}`)
	if status != http.StatusUnprocessableEntity || !strings.Contains(body, `"code":"bad_code","reason":"clock","clock_steps":8`) {
		t.Errorf("raw clock answer: %d %s", status, body)
	}
	info, err := c.User(ctx, "alice")
	if err != nil || !info.ReplacePendingSince.Equal(now) || !info.ReplaceExpiresAt.Equal(now.Add(10*time.Minute)) ||
		info.DriftSteps != 8 || !info.DriftAt.Equal(now) {
		t.Errorf("User during the replacement = %+v, %v", info, err)
	}
	// Four tries are used up (old phone, plain wrong, two clock errors): the fifth is checked,
	// the sixth voids.
	if _, err := c.ConfirmReplace(ctx, "alice", b, "000000x"); !errors.Is(err, enroll.ErrBadCode) {
		t.Fatalf("fifth try = %v", err)
	}
	_, err = c.ConfirmReplace(ctx, "alice", b, codeAt(t, l.Secret, now))
	if !errors.Is(err, enroll.ErrVoided) || err.Error() != enroll.ErrReplaceVoided.Error() {
		t.Errorf("sixth try = %v, want the replacement voided", err)
	}
	if u, _ := d.st.Get("alice"); u.State != store.StateActive || !u.NextSince.IsZero() {
		t.Errorf("after the void: %+v", u)
	}

	// bob's replacement is cancelled by its holder, once.
	if err := c.CancelReplace(ctx, "bob", bobB); err != nil {
		t.Fatalf("CancelReplace: %v", err)
	}
	if err := c.CancelReplace(ctx, "bob", bobB); !errors.Is(err, enroll.ErrNoPending) {
		t.Errorf("CancelReplace again = %v, want ErrNoPending", err)
	}
	ev, _ := d.st.Events(store.EventQuery{User: "bob"})
	if last := ev[len(ev)-1]; last.Kind != store.EventReplaceCancelled || last.Actor != me || last.Door != store.DoorConsole {
		t.Errorf("last bob event %+v", last)
	}
}

// TestForcedImportDropsReplacement: a forced import replaces the linked device; a replacement
// begun for the old one must not then replace the imported one.
func TestForcedImportDropsReplacement(t *testing.T) {
	d := startDaemon(t)
	c := NewClient(d.path)
	ctx := context.Background()
	linkedSecret(t, d, c, "alice")
	l, b, err := c.BeginReplace(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Import(ctx, "alice", ImportRequest{SecretBase32: importSecret, Force: true}); err != nil {
		t.Fatalf("Import: %v", err)
	}
	if u, _ := d.st.Get("alice"); !u.NextSince.IsZero() || u.PendingBinding != nil || u.ConfirmTries != 0 {
		t.Errorf("after the import: %+v", u)
	}
	d.clock.Add(time.Minute)
	if _, err := c.ConfirmReplace(ctx, "alice", b, codeAt(t, l.Secret, d.clock.Now())); !errors.Is(err, enroll.ErrNoPending) {
		t.Errorf("ConfirmReplace after the import = %v, want ErrNoPending", err)
	}
}
