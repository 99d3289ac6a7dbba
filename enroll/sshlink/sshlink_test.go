package sshlink

import (
	"bufio"
	"context"
	"errors"
	"gatekeeper/gatekeeper/connserve"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

func TestAuth(t *testing.T) {
	t.Parallel()
	pw := []prompt{{PromptPassword, false}, {PromptCode, false}}
	pwTicket := []prompt{{PromptPassword, false}, {PromptTicket, false}, {PromptCode, false}}
	tests := []struct {
		name       string
		outside    bool
		noTickets  bool
		user       string
		password   string
		ticket     func(e *env) string
		wantOK     bool
		wantAsked  []prompt
		wantChecks int // CheckPassword calls
	}{
		{name: "allowed network, right password", user: testUser, password: testPassword,
			wantOK: true, wantAsked: pw, wantChecks: 1},
		{name: "allowed network, wrong password", user: testUser, password: "guess",
			wantAsked: pw, wantChecks: 1},
		{name: "unknown user", user: "mallory", password: testPassword, wantAsked: pw, wantChecks: 1},
		{name: "invalid user name never reaches the password check", user: "-oProxyCommand=x", password: testPassword,
			wantAsked: pw},
		{name: "oversized password never reaches the password check", user: testUser, password: strings.Repeat("p", 2000),
			wantAsked: pw},
		{name: "outside without a ticket", outside: true, user: testUser, password: testPassword,
			ticket: func(*env) string { return "" }, wantAsked: pwTicket},
		{name: "outside with a made-up ticket", outside: true, user: testUser, password: testPassword,
			ticket: func(*env) string { return "abcd-efgh-ijkm-npqr-stuv" }, wantAsked: pwTicket},
		{name: "outside with another user's ticket", outside: true, user: testUser, password: testPassword,
			ticket: func(e *env) string { return e.ticket("bob") }, wantAsked: pwTicket},
		{name: "outside with a ticket and a wrong password", outside: true, user: testUser, password: "guess",
			ticket: func(e *env) string { return e.ticket(testUser) }, wantAsked: pwTicket, wantChecks: 1},
		{name: "outside with a ticket", outside: true, user: testUser, password: testPassword,
			ticket: func(e *env) string { return e.ticket(testUser) }, wantOK: true, wantAsked: pwTicket, wantChecks: 1},
		{name: "outside with a ticket typed in capitals", outside: true, user: testUser, password: testPassword,
			ticket: func(e *env) string { return strings.ToUpper(e.ticket(testUser)) }, wantOK: true, wantAsked: pwTicket, wantChecks: 1},
		{name: "outside, tickets not accepted", outside: true, noTickets: true, user: testUser, password: testPassword,
			ticket: func(e *env) string { return e.ticket(testUser) }, wantAsked: pwTicket},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(e *env) {
				if tc.noTickets {
					e.srv.Tickets = nil
				}
			})
			e.allowed.Store(!tc.outside)
			ticket := ""
			if tc.ticket != nil {
				ticket = tc.ticket(e)
			}
			c, asked, err := e.dial(tc.user, tc.password, ticket)
			if c != nil {
				c.Close()
			}
			if tc.wantOK && err != nil {
				t.Fatalf("login refused: %v", err)
			}
			if !tc.wantOK && (err == nil || !strings.Contains(err.Error(), "unable to authenticate")) {
				t.Fatalf("login: err = %v, want it refused", err)
			}
			if len(asked) != len(tc.wantAsked) {
				t.Fatalf("prompts %+v, want %+v", asked, tc.wantAsked)
			}
			for i := range asked {
				if asked[i] != tc.wantAsked[i] {
					t.Errorf("prompt %d = %+v, want %+v", i, asked[i], tc.wantAsked[i])
				}
			}
			if got := e.auth.Calls(); got != tc.wantChecks {
				t.Errorf("CheckPassword called %d times, want %d", got, tc.wantChecks)
			}
			if n := e.linker.begins.Load(); n != 0 {
				t.Errorf("Linker.Begin called %d times during login", n)
			}
			if logs := e.logs.String(); strings.Contains(logs, tc.password) || ticket != "" && strings.Contains(logs, ticket) {
				t.Errorf("the log holds the password or the ticket:\n%s", logs)
			}
		})
	}
}

func TestSession(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		pty     bool
		command string
		setup   func(e *env)
		// linked links a device first and logs in with a code from it.
		linked bool
		// drive types into the session; nil: type the right code once the prompt shows.
		drive     func(cs *clientSession, secret string)
		wantExit  int
		wantOut   []string
		wantState store.State
		begins    int32
		refused   bool // the flow ends before it asks for a code
	}{
		{name: "pty", pty: true, wantExit: 0, wantState: store.StateActive, begins: 1,
			wantOut: []string{"Device linked for alice", "Your recovery codes", "Code from your app: "}},
		{name: "no pty", wantExit: 0, wantState: store.StateActive, begins: 1,
			wantOut: []string{"Device linked for alice", "Your recovery codes"}},
		{name: "exec link", command: "link", wantExit: 0, wantState: store.StateActive, begins: 1,
			wantOut: []string{"Device linked for alice"}},
		{name: "pty line editing", pty: true, wantExit: 0, wantState: store.StateActive, begins: 1,
			drive: func(cs *clientSession, secret string) {
				cs.waitFor("Code from your app: ")
				// Typo, erased; an arrow key; then the code in two writes.
				code := codeAt(cs.t, secret, time.Now())
				cs.write("98\x7f\x7f\x1b[A" + code[:3])
				cs.write(code[3:] + "\r")
			},
			wantOut: []string{"98\b \b\b \b", "Device linked for alice"}},
		{name: "pty ctrl-c", pty: true, wantExit: 1, wantState: store.StatePending, begins: 1,
			drive: func(cs *clientSession, secret string) {
				cs.waitFor("Code from your app: ")
				cs.write("12\x03")
			},
			wantOut: []string{"12^C\r\n", "Aborted. The link stays pending until "}},
		{name: "no pty, input ends", wantExit: 1, wantState: store.StatePending, begins: 1,
			drive: func(cs *clientSession, secret string) {
				cs.waitFor("Code from your app: ")
				cs.stdin.Close()
			},
			wantOut: []string{"No code given; the link stays pending until "}},
		{name: "too many wrong codes", pty: true, wantExit: 1, wantState: store.StateNone, begins: 1,
			drive: func(cs *clientSession, secret string) {
				bad := wrongCode(cs.t, secret)
				for i := 1; i <= enroll.MaxConfirmTries; i++ {
					cs.waitCount("Code from your app: ", i)
					cs.write(bad + "\r")
				}
				// The next attempt is not checked, however good.
				cs.waitCount("Code from your app: ", enroll.MaxConfirmTries+1)
				cs.write(codeAt(cs.t, secret, time.Now()) + "\r")
			},
			wantOut: []string{"That code did not match.", "Too many wrong codes: this link was cancelled; start again."}},
		{name: "linked: the menu", pty: true, wantExit: 0, wantState: store.StateActive, refused: true, linked: true,
			drive: func(cs *clientSession, _ string) {
				cs.waitFor(promptChoice)
				cs.write("3\r")
			},
			wantOut: []string{"1) Replace this device (link a new phone)", "Bye."}},
		{name: "linked: the menu for exec link", command: "link", wantExit: 0, wantState: store.StateActive, refused: true, linked: true,
			drive: func(cs *clientSession, _ string) {
				cs.waitFor(promptChoice)
				cs.write("3\n")
			},
			wantOut: []string{"1) Replace this device (link a new phone)", "Bye."}},
		{name: "link pending", wantExit: 1, wantState: store.StatePending, begins: 1, refused: true,
			setup: func(e *env) {
				if _, _, err := e.svc.Begin(context.Background(), testUser); err != nil {
					e.t.Fatal(err)
				}
			},
			wantOut: []string{"A device link is already pending for alice", "expires at"}},
		{name: "other command refused", command: "ls -l", wantExit: 1, wantState: store.StateNone, refused: true,
			wantOut: []string{"runs no commands"}},
		{name: "oversized input", wantExit: 1, wantState: store.StatePending, begins: 1,
			drive: func(cs *clientSession, secret string) {
				cs.waitFor("Code from your app: ")
				go io.WriteString(cs.stdin, strings.Repeat("1", MaxInput+1))
			},
			wantOut: []string{"Too much input. The link stays pending until "}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			code := ""
			if tc.linked {
				secret, _ := e.link(testUser)
				code = e.code(testUser, secret)
			}
			c := e.mustDialCode(testUser, testPassword, "", code)
			cs := startSession(t, c, tc.pty, tc.command)
			secret := ""
			if !tc.refused {
				secret = secretFrom(t, cs.waitFor("Code from your app: "))
			}
			if tc.drive != nil {
				tc.drive(cs, secret)
			} else if tc.wantExit == 0 {
				cs.write(codeAt(t, secret, time.Now()) + map[bool]string{true: "\r", false: "\n"}[tc.pty])
			}
			exit, out := cs.wait()
			if exit != tc.wantExit {
				t.Errorf("exit status %d, want %d", exit, tc.wantExit)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("no %q in the output", w)
				}
			}
			if tc.wantExit == 0 && !tc.linked {
				if n := len(recoveryLine.FindAllString(out, -1)); n != 10 {
					t.Errorf("%d recovery codes in the output, want 10", n)
				}
			}
			if tc.pty {
				if strings.Contains(strings.ReplaceAll(out, "\r\n", ""), "\n") {
					t.Errorf("bare \\n in pty output")
				}
			} else if strings.Contains(out, "\r") {
				t.Errorf("\\r in output without a pty")
			}
			if got := e.state(testUser); got != tc.wantState {
				t.Errorf("state %s, want %s", got, tc.wantState)
			}
			if got := e.linker.begins.Load(); got != tc.begins {
				t.Errorf("Begin called %d times, want %d", got, tc.begins)
			}
			if secret != "" && strings.Contains(e.logs.String(), secret) {
				t.Errorf("the secret is in the log")
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// TestPtyEcho checks that the code typed at a pty is echoed, since a raw-mode client does not.
func TestPtyEcho(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cs := startSession(t, e.mustDial(testUser, testPassword, ""), true, "")
	secret := secretFrom(t, cs.waitFor("Code from your app: "))
	code := codeAt(t, secret, time.Now())
	cs.write(code + "\r")
	if exit, out := cs.wait(); exit != 0 || !strings.Contains(out, "Code from your app: "+code+"\r\n") {
		t.Fatalf("exit %d, output without the echoed code %s:\n%s", exit, code, out)
	}
}

func TestTicketWorksOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.allowed.Store(false)
	ticket := e.ticket(testUser)

	cs := startSession(t, e.mustDial(testUser, testPassword, ticket), true, "")
	out := cs.waitFor("Code from your app: ")
	if err := e.st.CheckTicket(testUser, ticket, time.Now()); !errors.Is(err, store.ErrNoTicket) {
		t.Errorf("ticket still valid once the session started: %v", err)
	}
	cs.write(codeAt(t, secretFrom(t, out), time.Now()) + "\r")
	if exit, out := cs.wait(); exit != 0 {
		t.Fatalf("exit %d:\n%s", exit, out)
	}
	waits := e.refusalWaits.Load()
	if c, _, err := e.dial(testUser, testPassword, ticket); err == nil {
		c.Close()
		t.Fatal("the ticket worked a second time")
	}
	// Refused before the password check: it waited as long as a password check would have.
	if n := e.refusalWaits.Load() - waits; n < 1 {
		t.Errorf("a refused ticket did not wait before the refusal")
	}
}

// TestTicketUsedInBetween: two logins with one ticket; the second session to start is refused.
func TestTicketUsedInBetween(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.allowed.Store(false)
	ticket := e.ticket(testUser)
	c1 := e.mustDial(testUser, testPassword, ticket)
	c2 := e.mustDial(testUser, testPassword, ticket)
	first := startSession(t, c1, true, "")
	first.waitFor("Code from your app: ")
	second := startSession(t, c2, true, "")
	exit, out := second.wait()
	if exit != 1 || !strings.Contains(out, "Your linking ticket is no longer valid") {
		t.Fatalf("second session: exit %d, output:\n%s", exit, out)
	}
	if n := e.linker.begins.Load(); n != 1 {
		t.Errorf("Begin called %d times, want 1", n)
	}
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		idle      time.Duration
		confirm   time.Duration
		wantOut   string
		wantState store.State
	}{
		{"idle", 300 * time.Millisecond, 10 * time.Minute, "No code was entered for 300ms, so the session ends.", store.StatePending},
		{"link expires", 10 * time.Minute, 1500 * time.Millisecond, "The link expired before a code was entered.", store.StatePending},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(e *env) {
				e.srv.IdleTimeout = tc.idle
				e.svc.ConfirmWithin = tc.confirm
			})
			cs := startSession(t, e.mustDial(testUser, testPassword, ""), true, "")
			cs.waitFor("Code from your app: ")
			exit, out := cs.wait()
			if exit != 1 || !strings.Contains(out, tc.wantOut) {
				t.Fatalf("exit %d, want 1 and %q in:\n%s", exit, tc.wantOut, out)
			}
			if got := e.state(testUser); got != tc.wantState {
				t.Errorf("state %s, want %s", got, tc.wantState)
			}
		})
	}
}

func TestLoginGraceTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(e *env) { e.srv.LoginGraceTime = 200 * time.Millisecond })
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	_ = nc.SetDeadline(time.Now().Add(waitTime))
	// Say nothing: the server sends its version and must hang up after the grace time.
	if _, err := io.ReadAll(nc); err != nil {
		t.Fatalf("the server did not hang up: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("hung up after %s, want about 200ms", d)
	}
}

func TestMaxStartups(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(e *env) { e.srv.Preauth = connserve.Limits{PerAddress: 1, PerNetwork: 1, Max: 1} })
	hold, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	// The version line proves the server took this connection's startup slot.
	if line, err := bufio.NewReader(hold).ReadString('\n'); err != nil || !strings.HasPrefix(line, "SSH-2.0-") {
		t.Fatalf("version line %q, %v", line, err)
	}
	if _, _, err := e.dial(testUser, testPassword, ""); err == nil {
		t.Fatal("a second unauthenticated connection was served")
	}
	hold.Close()
	// The slot comes back once the server noticed the close; retry until it did.
	deadline := time.Now().Add(waitTime)
	for {
		c, _, err := e.dial(testUser, testPassword, "")
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no login after the held connection closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSetLimits: a config reload's pre-auth caps and grace time apply to the
// connections that arrive after it, as at the front door.
func TestSetLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.srv.SetLimits(connserve.Limits{PerAddress: 1, PerNetwork: 1, Max: 1}, 0, 300*time.Millisecond)
	hold, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	if line, err := bufio.NewReader(hold).ReadString('\n'); err != nil || !strings.HasPrefix(line, "SSH-2.0-") {
		t.Fatalf("version line %q, %v", line, err)
	}
	if _, _, err := e.dial(testUser, testPassword, ""); err == nil {
		t.Fatal("a second unauthenticated connection was served after the cap was lowered to 1")
	}
	// Saying nothing, the held connection is hung up after the new grace time.
	start := time.Now()
	_ = hold.SetDeadline(time.Now().Add(waitTime))
	if _, err := io.ReadAll(hold); err != nil {
		t.Fatalf("the server did not hang up: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("hung up after %s, want about 300ms (the default grace is a minute)", d)
	}
}

func TestOtherChannelsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.mustDial(testUser, testPassword, "")
	if _, err := c.Dial("tcp", "127.0.0.1:22"); err == nil {
		t.Error("port forwarding was accepted")
	}
	if _, _, err := c.OpenChannel("x11", nil); err == nil {
		t.Error("an x11 channel was accepted")
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cs := startSession(t, e.mustDial(testUser, testPassword, ""), true, "")
	cs.waitFor("Code from your app: ")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a session waiting = %v, want DeadlineExceeded", err)
	}
	select {
	case <-cs.done:
	case <-time.After(waitTime):
		t.Fatal("the session survived Shutdown's deadline")
	}
	if _, _, err := e.dial(testUser, testPassword, ""); err == nil {
		t.Fatal("login after Shutdown")
	}
}

// TestEndUser: a reset ends every connection of the user — a session waiting for its code says
// why, a connection without a session is closed — and leaves other users alone.
func TestEndUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	waiting := startSession(t, e.mustDial(testUser, testPassword, ""), true, "")
	waiting.waitFor("Code from your app: ")
	idle := e.mustDial(testUser, testPassword, "")
	bob := startSession(t, e.mustDial("bob", "bobs password", ""), false, "")
	secret := secretFrom(t, bob.waitFor("Code from your app: "))

	if n := e.srv.EndUser(testUser); n != 2 {
		t.Errorf("EndUser = %d, want 2", n)
	}
	exit, out := waiting.wait()
	if exit != 1 || !strings.Contains(out, "An admin reset your account, so this session ends.") {
		t.Errorf("alice's session: exit %d, output:\n%s", exit, out)
	}
	if err := idle.Wait(); err == nil {
		t.Error("alice's connection without a session ended without an error")
	}
	bob.write(codeAt(t, secret, time.Now()) + "\n")
	if exit, out := bob.wait(); exit != 0 {
		t.Errorf("bob's session: exit %d, output:\n%s", exit, out)
	}
	if n := e.srv.EndUser(testUser); n != 0 {
		t.Errorf("second EndUser = %d, want 0", n)
	}
}

// TestAuthSecondFactor: a user with a linked device needs both factors at this door, the code
// used up as at the front door; a user without one answers the code prompt with anything.
func TestAuthSecondFactor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		linked  bool
		outside bool
		// code answers the code prompt; secret and recovery are the linked device's.
		code       func(e *env, secret string, recovery []string) string
		wantOK     bool
		wantChecks int // SignIn calls
		wantWaits  int32
	}{
		{name: "linked, right code", linked: true, wantOK: true, wantChecks: 1,
			code: func(e *env, secret string, _ []string) string { return e.code(testUser, secret) }},
		{name: "linked, recovery code", linked: true, wantOK: true, wantChecks: 1,
			code: func(_ *env, _ string, recovery []string) string { return recovery[3] }},
		{name: "linked, wrong code", linked: true, wantChecks: 1,
			code: func(e *env, secret string, _ []string) string { return wrongCode(e.t, secret) }},
		{name: "linked, no code", linked: true, wantChecks: 1,
			code: func(*env, string, []string) string { return "" }},
		{name: "linked, the code that confirmed the link", linked: true, wantChecks: 1,
			code: func(e *env, secret string, _ []string) string {
				// The step the link spent, not the current one: the
				// link may have taken a code of the step before.
				u, err := e.st.Get(testUser)
				if err != nil {
					e.t.Fatal(err)
				}
				return codeAt(e.t, secret, time.Unix(int64(u.LastStep)*30, 0))
			}},
		{name: "linked, outside without a ticket: both factors instead", linked: true, outside: true, wantOK: true, wantChecks: 1,
			code: func(e *env, secret string, _ []string) string { return e.code(testUser, secret) }},
		{name: "linked, outside without a ticket or a code: refused before the sign-in", linked: true, outside: true, wantWaits: 1,
			code: func(*env, string, []string) string { return "" }},
		{name: "not linked, outside with a code but no ticket: refused without the password", outside: true, wantChecks: 1,
			code: func(*env, string, []string) string { return "123456" }},
		{name: "oversized code: refused before the sign-in", linked: true, wantWaits: 1,
			code: func(*env, string, []string) string { return strings.Repeat("1", maxCodeLen+1) }},
		{name: "not linked, code left empty", wantOK: true, wantChecks: 1,
			code: func(*env, string, []string) string { return "" }},
		{name: "not linked, something typed at the code prompt", wantOK: true, wantChecks: 1,
			code: func(*env, string, []string) string { return "123456" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.allowed.Store(!tc.outside)
			var secret string
			var recovery []string
			if tc.linked {
				secret, recovery = e.link(testUser)
			}
			code := tc.code(e, secret, recovery)
			c, asked, err := e.dialCode(testUser, testPassword, "", code)
			if c != nil {
				c.Close()
			}
			if tc.wantOK != (err == nil) {
				t.Fatalf("login: err = %v, want accepted %v", err, tc.wantOK)
			}
			want := []prompt{{PromptPassword, false}, {PromptCode, false}}
			if tc.outside {
				want = []prompt{{PromptPassword, false}, {PromptTicket, false}, {PromptCode, false}}
			}
			if !slices.Equal(asked, want) {
				t.Errorf("prompts %+v, want %+v", asked, want)
			}
			if got := e.auth.Calls(); got != tc.wantChecks {
				t.Errorf("SignIn called %d times, want %d", got, tc.wantChecks)
			}
			for _, d := range e.auth.Doors() {
				if d != store.DoorLinking {
					t.Errorf("SignIn called with door %q, want %q", d, store.DoorLinking)
				}
			}
			if got := e.refusalWaits.Load(); got != tc.wantWaits {
				t.Errorf("%d refusal waits, want %d", got, tc.wantWaits)
			}
			if tc.linked && tc.wantOK {
				// Used up: the same answer cannot sign in again.
				if c, _, err := e.dialCode(testUser, testPassword, "", code); err == nil {
					c.Close()
					t.Errorf("the code %q signed in twice", code)
				}
			}
			if strings.Contains(code, "-") && strings.Contains(e.logs.String(), code) {
				t.Errorf("the recovery code is in the log")
			}
		})
	}
}
