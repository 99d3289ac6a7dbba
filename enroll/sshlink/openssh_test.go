package sshlink

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// askpassScript answers OpenSSH's keyboard-interactive prompts (SSH_ASKPASS_REQUIRE=force sends
// every prompt to it, the prompt as its argument).
const askpassScript = `#!/bin/sh
case "$1" in
*Password*) printf '%s\n' "$GK_TEST_PASSWORD" ;;
*ticket*) printf '%s\n' "$GK_TEST_TICKET" ;;
*code*) printf '%s\n' "$GK_TEST_CODE" ;;
*) echo "unexpected prompt: $1" >&2; exit 1 ;;
esac
`

// opensshRun is one run of the real OpenSSH client against the test server.
type opensshRun struct {
	t      *testing.T
	stdin  io.WriteCloser
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error // Wait's result, after done
}

// openssh starts `ssh -tt -p PORT user@127.0.0.1` with askpass answering password and ticket,
// and the code prompt with nothing (a user without a device); the test types into its stdin as
// a user would at a terminal.
func (e *env) openssh(user, password, ticket string) *opensshRun {
	e.t.Helper()
	return e.opensshCode(user, password, ticket, "")
}

// opensshCode is openssh answering the code prompt with code.
func (e *env) opensshCode(user, password, ticket, code string) *opensshRun {
	t := e.t
	t.Helper()
	sshPath := requireTool(t, "ssh")
	dir := t.TempDir()
	askpass := filepath.Join(dir, "askpass")
	if err := os.WriteFile(askpass, []byte(askpassScript), 0o700); err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sshPath, "-F", "/dev/null", "-tt", "-p", port,
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "PreferredAuthentications=keyboard-interactive", "-o", "NumberOfPasswordPrompts=1",
		"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
		user+"@"+host)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"SSH_ASKPASS=" + askpass,
		"SSH_ASKPASS_REQUIRE=force",
		"GK_TEST_PASSWORD=" + password,
		"GK_TEST_TICKET=" + ticket,
		"GK_TEST_CODE=" + code,
	}
	r := &opensshRun{t: t, stdout: newSyncBuffer(), stderr: newSyncBuffer(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = r.stdout, r.stderr
	if r.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting ssh: %v", err)
	}
	go func() {
		r.err = cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		r.stdin.Close()
		select {
		case <-r.done:
		case <-time.After(waitTime):
			cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// waitFor waits for want on ssh's stdout and returns the stdout so far.
func (r *opensshRun) waitFor(want string) string {
	r.t.Helper()
	out, ok := r.stdout.waitFor(want, r.done)
	if !ok {
		r.t.Fatalf("no %q from ssh; stdout:\n%s\nstderr:\n%s", want, out, r.stderr.String())
	}
	return out
}

// wait waits for ssh to exit and returns its exit code.
func (r *opensshRun) wait() int {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(waitTime):
		r.t.Fatalf("ssh did not exit; stdout:\n%s\nstderr:\n%s", r.stdout.String(), r.stderr.String())
	}
	var ee *exec.ExitError
	switch {
	case r.err == nil:
		return 0
	case errors.As(r.err, &ee):
		return ee.ExitCode()
	default:
		r.t.Fatalf("ssh: %v", r.err)
		return -1
	}
}

// oathtool computes the current code of a base32 secret with the real oathtool.
func oathtool(t *testing.T, secret string) string {
	t.Helper()
	out, err := exec.Command(requireTool(t, "oathtool"), "--totp", "-b", secret).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	code := strings.TrimSpace(string(out))
	if len(code) != 6 {
		t.Fatalf("oathtool printed %q", out)
	}
	return code
}

// TestOpenSSH drives the flow with the real OpenSSH client through a pty (-tt), computing the
// code with the real oathtool, as a user would with their phone.
func TestOpenSSH(t *testing.T) {
	t.Parallel()
	requireTool(t, "ssh")
	requireTool(t, "oathtool")
	tests := []struct {
		name     string
		outside  bool
		password string
		ticket   bool // issue a ticket and answer the ticket prompt with it
		linked   bool // link a device first and answer the code prompt with oathtool's code
		link     bool // the flow asks for a code: answer it with oathtool's
		wantExit int
		wantOut  []string // on stdout
		wantErr  string   // on stderr
		begins   int32
		checks   int
		// again runs ssh a second time with the same answers and expects it refused.
		again bool
	}{
		{name: "allowed network: link", password: testPassword, link: true, wantExit: 0,
			wantOut: []string{"Device linked for alice", "Your recovery codes (shown only this once):"}, begins: 1, checks: 1},
		{name: "outside without a ticket: refused", outside: true, password: testPassword, wantExit: 255,
			wantErr: "Permission denied"},
		{name: "outside with a ticket: link, once", outside: true, password: testPassword, ticket: true, link: true,
			wantExit: 0, wantOut: []string{"Device linked for alice"}, begins: 1, checks: 1, again: true},
		{name: "linked: the menu, quit", password: testPassword, linked: true, wantExit: 0,
			wantOut: []string{"1) Replace this device (link a new phone)", "Bye."}, checks: 1},
		{name: "wrong password: refused", password: "not the password", wantExit: 255,
			wantErr: "Permission denied", checks: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.allowed.Store(!tc.outside)
			ticket := ""
			if tc.ticket {
				ticket = e.ticket(testUser)
			}
			loginCode := ""
			var linking, linked time.Time
			if tc.linked {
				linking = e.now()
				secret, _ := e.link(testUser)
				linked = e.now()
				loginCode = e.code(testUser, secret)
			}
			r := e.opensshCode(testUser, tc.password, ticket, loginCode)
			if tc.linked {
				r.waitFor(promptChoice)
				r.typeLine("3")
			}
			code := ""
			if tc.link {
				out := r.waitFor("Code from your app: ")
				code = oathtool(t, secretFrom(t, out))
				if _, err := io.WriteString(r.stdin, code+"\r"); err != nil {
					t.Fatal(err)
				}
			}
			exit := r.wait()
			stdout, stderr := r.stdout.String(), r.stderr.String()
			if exit != tc.wantExit {
				t.Errorf("ssh exit %d, want %d", exit, tc.wantExit)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(stdout, w) {
					t.Errorf("no %q on stdout", w)
				}
			}
			if tc.wantErr != "" && !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("no %q on stderr", tc.wantErr)
			}
			if tc.linked && !hasLinkDay(stdout, "Your authenticator app is linked (since ", ")", linking, linked) {
				t.Error(`no "Your authenticator app is linked (since DAY)" with the day of the link on stdout`)
			}
			if tc.link {
				if !strings.Contains(stdout, "Code from your app: "+code+"\r\n") {
					t.Errorf("the typed code %s was not echoed", code)
				}
				if n := len(recoveryLine.FindAllString(stdout, -1)); n != 10 {
					t.Errorf("%d recovery codes on stdout, want 10", n)
				}
			}
			if got := e.linker.begins.Load(); got != tc.begins {
				t.Errorf("Linker.Begin called %d times, want %d", got, tc.begins)
			}
			if got := e.auth.Calls(); got != tc.checks {
				t.Errorf("CheckPassword called %d times, want %d", got, tc.checks)
			}
			if t.Failed() {
				t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
			}
			if tc.again {
				r := e.openssh(testUser, tc.password, ticket)
				if exit := r.wait(); exit != 255 || !strings.Contains(r.stderr.String(), "Permission denied") {
					t.Errorf("second run: exit %d, stderr %q; want the ticket refused", exit, r.stderr.String())
				}
				if got := e.linker.begins.Load(); got != tc.begins {
					t.Errorf("Linker.Begin called on the second run")
				}
			}
		})
	}
}

// typeLine sends one line to ssh's stdin, as typed at the terminal (Enter is "\r" on a pty).
func (r *opensshRun) typeLine(line string) {
	r.t.Helper()
	if _, err := io.WriteString(r.stdin, line+"\r"); err != nil {
		r.t.Fatalf("typing %q: %v", line, err)
	}
}

// waitCount waits for n occurrences of want on ssh's stdout.
func (r *opensshRun) waitCount(want string, n int) string {
	r.t.Helper()
	out, ok := r.stdout.waitCount(want, n, r.done)
	if !ok {
		r.t.Fatalf("no %d× %q from ssh; stdout:\n%s\nstderr:\n%s", n, want, out, r.stderr.String())
	}
	return out
}

// TestOpenSSHConfirmLimits drives the confirmation rules with the real OpenSSH client: the
// store checks enroll.MaxConfirmTries codes and the next attempt cancels the link; a second
// connection of the same user can neither start nor confirm the first one's link; an admin
// reset ends a linking session with a message.
func TestOpenSSHConfirmLimits(t *testing.T) {
	t.Parallel()
	requireTool(t, "ssh")
	requireTool(t, "oathtool")

	t.Run("wrong codes cancel the link", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		r := e.openssh(testUser, testPassword, "")
		secret := secretFrom(t, r.waitFor("Code from your app: "))
		bad := wrongCode(t, secret)
		for i := 1; i <= enroll.MaxConfirmTries; i++ {
			r.typeLine(bad)
			r.waitCount("Code from your app: ", i+1)
		}
		r.typeLine(oathtool(t, secret)) // not checked any more
		if exit := r.wait(); exit != 1 {
			t.Errorf("ssh exit %d, want 1", exit)
		}
		out := r.stdout.String()
		if n := strings.Count(out, "That code did not match."); n != enroll.MaxConfirmTries {
			t.Errorf("%d mismatches explained, want %d", n, enroll.MaxConfirmTries)
		}
		if !strings.Contains(out, "Too many wrong codes: this link was cancelled; start again.") {
			t.Errorf("no clear message about the cancelled link; stdout:\n%s", out)
		}
		if st := e.state(testUser); st != store.StateNone {
			t.Errorf("state %s, want none", st)
		}
		ev, err := e.st.Events(store.EventQuery{User: testUser})
		if err != nil || ev[len(ev)-1].Kind != enroll.EventLinkVoided || !strings.HasPrefix(ev[len(ev)-1].Actor, "ssh-link ") {
			t.Errorf("last audit event %+v (%v), want %s by ssh-link", ev[len(ev)-1], err, enroll.EventLinkVoided)
		}
		// Start again: a new secret, which links.
		r2 := e.openssh(testUser, testPassword, "")
		secret2 := secretFrom(t, r2.waitFor("Code from your app: "))
		if secret2 == secret {
			t.Error("the new link shows the cancelled secret")
		}
		r2.typeLine(oathtool(t, secret2))
		if exit := r2.wait(); exit != 0 || e.state(testUser) != store.StateActive {
			t.Errorf("linking again: exit %d, state %s", exit, e.state(testUser))
		}
	})

	t.Run("only the connection that started the link confirms it", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		first := e.openssh(testUser, testPassword, "")
		secret := secretFrom(t, first.waitFor("Code from your app: "))
		second := e.openssh(testUser, testPassword, "")
		if exit := second.wait(); exit != 1 {
			t.Errorf("second connection: exit %d, want 1", exit)
		}
		if out := second.stdout.String(); !strings.Contains(out, "A device link is already pending for alice") ||
			strings.Contains(out, "Code from your app") || strings.Contains(out, secret) {
			t.Errorf("second connection's output:\n%s", out)
		}
		if u, _ := e.st.Get(testUser); u.ConfirmTries != 0 {
			t.Errorf("%d tries counted", u.ConfirmTries)
		}
		first.typeLine(oathtool(t, secret))
		if exit := first.wait(); exit != 0 || !strings.Contains(first.stdout.String(), "Your recovery codes") {
			t.Errorf("first connection: exit %d, stdout:\n%s", exit, first.stdout.String())
		}
	})

	t.Run("an admin reset ends the session", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		r := e.openssh(testUser, testPassword, "")
		r.waitFor("Code from your app: ")
		if n := e.srv.EndUser(testUser); n != 1 {
			t.Errorf("EndUser = %d, want 1", n)
		}
		if exit := r.wait(); exit != 1 {
			t.Errorf("ssh exit %d, want 1", exit)
		}
		if out := r.stdout.String(); !strings.Contains(out, "An admin reset your account, so this session ends.") {
			t.Errorf("no reset message; stdout:\n%s", out)
		}
	})
}

// oathtoolNext computes, with the real oathtool, the code of secret for the first time step
// user has not used yet (a step is used once, whichever phone).
func oathtoolNext(e *env, user, secret string) string {
	e.t.Helper()
	u, err := e.st.Get(user)
	if err != nil {
		e.t.Fatal(err)
	}
	step := max(u.LastStep+1, uint64(e.now().Unix()/30))
	out, err := exec.Command(requireTool(e.t, "oathtool"), "--totp", "-b", "--now", "@"+strconv.FormatUint(step*30, 10), secret).Output()
	if err != nil {
		e.t.Fatalf("oathtool: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestOpenSSHMenu drives the menu of a linked user with the real OpenSSH client through a pty
// (-tt), the new phone's code from the real oathtool.
func TestOpenSSHMenu(t *testing.T) {
	t.Parallel()
	requireTool(t, "ssh")
	requireTool(t, "oathtool")

	t.Run("replace the device", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		oldSecret, oldRecovery := e.link(testUser)
		r := e.opensshCode(testUser, testPassword, "", e.code(testUser, oldSecret))
		r.waitFor(promptChoice)
		r.typeLine("1")
		r.waitFor(promptEndSSH)
		r.typeLine("y")
		secret := secretFrom(t, r.waitFor("Code from your app: "))
		code := oathtoolNext(e, testUser, secret)
		r.typeLine(code)
		if exit := r.wait(); exit != 0 {
			t.Fatalf("ssh exit %d; stdout:\n%s\nstderr:\n%s", exit, r.stdout.String(), r.stderr.String())
		}
		out := r.stdout.String()
		for _, w := range []string{"Code from your app: " + code + "\r\n", "Device replaced for alice",
			"Your open SSH sessions were ended"} {
			if !strings.Contains(out, w) {
				t.Errorf("no %q on stdout:\n%s", w, out)
			}
		}
		if n := len(recoveryCodes(out)); n != 10 {
			t.Errorf("%d recovery codes on stdout, want 10", n)
		}
		if got := e.endCalls(); len(got) != 1 || got[0] != (endCall{testUser, true}) {
			t.Errorf("EndSessions calls %+v, want one for alice with SSH", got)
		}
		if err := e.signIn(testUser, e.code(testUser, oldSecret)); err == nil {
			t.Error("the old phone still signs in")
		}
		if err := e.signIn(testUser, oldRecovery[0]); err == nil {
			t.Error("an old recovery code still signs in")
		}
		if err := e.signIn(testUser, oathtoolNext(e, testUser, secret)); err != nil {
			t.Errorf("the new phone does not sign in: %v", err)
		}
		ev, _ := e.st.Events(store.EventQuery{User: testUser})
		replaced := false
		for _, x := range ev {
			replaced = replaced || x.Kind == store.EventDeviceReplaced && x.Door == store.DoorLinking
		}
		if !replaced {
			t.Errorf("no %s event at door %s in the audit log: %+v", store.EventDeviceReplaced, store.DoorLinking, ev)
		}
	})

	t.Run("new recovery codes", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		_, oldRecovery := e.link(testUser)
		r := e.opensshCode(testUser, testPassword, "", oldRecovery[9])
		r.waitFor(promptChoice)
		r.typeLine("2")
		r.waitFor(promptRenew)
		r.typeLine("y")
		if exit := r.wait(); exit != 0 {
			t.Fatalf("ssh exit %d; stdout:\n%s\nstderr:\n%s", exit, r.stdout.String(), r.stderr.String())
		}
		codes := recoveryCodes(r.stdout.String())
		if len(codes) != 10 {
			t.Fatalf("%d recovery codes on stdout, want 10:\n%s", len(codes), r.stdout.String())
		}
		if err := e.signIn(testUser, oldRecovery[0]); err == nil {
			t.Error("an old recovery code still signs in")
		}
		if err := e.signIn(testUser, codes[0]); err != nil {
			t.Errorf("a new recovery code does not sign in: %v", err)
		}
	})
}
