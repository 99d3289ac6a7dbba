package sshlink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"gatekeeper/enroll"
)

// The menu a user with a linked device gets after proving both factors.
const (
	menuText = `  1) Replace this device (link a new phone)
  2) New recovery codes
  3) Quit
`
	// menuTextKeys is the menu when SSH keys are enabled (Server.KeysEnabled).
	menuTextKeys = `  1) Replace this device (link a new phone)
  2) New recovery codes
  3) SSH keys
  4) Quit
`
	promptChoice     = "Choose 1, 2 or 3: "
	promptChoiceKeys = "Choose 1, 2, 3 or 4: "
	promptEndSSH     = "Also end your open SSH sessions? [y/N] "
	promptRenew      = "New recovery codes make all the ones you have now stop working. Go on? [y/N] "
	msgBadChoice     = "Please type 1, 2 or 3."
	msgBadChoiceKeys = "Please type 1, 2, 3 or 4."
	msgBadYesNo      = "Please answer y or n."
	msgNothingChange = "Nothing was changed."
)

// AccountManager is the part of the Linker that changes the credentials of a user with a
// linked device, as enroll.Service does: replacing the device (enroll.Replacer) and renewing
// the recovery codes (RenewRecovery returns the new ones, their one showing; the old ones are
// void). A Linker without it gives linked users no menu: they are told their device is linked.
type AccountManager interface {
	enroll.Replacer
	RenewRecovery(ctx context.Context, user string) ([]string, error)
}

// replaceState is what the session knows about its device replacement, for the message at the
// end: whether one was begun, and whether its cancellation worked when the flow ended without
// a code.
type replaceState struct {
	begun     bool
	cancelled bool
	cancelErr error
	confirmed bool
}

// menu offers a user with a linked device, who proved both factors at login, what can be
// changed here, runs the choice and returns the exit status. Bad input asks again; the
// session's idle timeout and input limit bound the waiting.
func (ss *session) menu(ctx context.Context, am AccountManager, in *lineInput, out, errOut io.Writer) int {
	since := ""
	if st, ok := ss.srv.Linker.(stater); ok {
		if u, err := st.State(ctx, ss.user); err == nil && !u.EnrolledAt.IsZero() {
			since = " (since " + u.EnrolledAt.Local().Format("2 January 2006") + ")"
		}
	}
	fmt.Fprintf(out, "Signed in as %s with your password and a second factor. Your authenticator app is linked%s.\n", ss.user, since)
	km := ss.srv.keyManager()
	items, prompt, bad, quit := menuText, promptChoice, msgBadChoice, "3"
	if km != nil {
		items, prompt, bad, quit = menuTextKeys, promptChoiceKeys, msgBadChoiceKeys, "4"
	}
	showMenu := func() {
		fmt.Fprintln(out)
		fmt.Fprint(out, items)
		fmt.Fprintln(out)
	}
	showMenu()
	for {
		answer, err := ss.ask(in, out, prompt)
		if err != nil {
			return ss.fail(ctx, err, in, errOut)
		}
		switch a := strings.TrimSpace(answer); {
		case a == "1":
			return ss.replace(ctx, am, in, out, errOut)
		case a == "2":
			return ss.renew(ctx, am, in, out, errOut)
		case a == "3" && km != nil:
			if status, done := ss.keys(ctx, km, in, out, errOut); done {
				return status
			}
			showMenu()
		case a == quit, a == "q", a == "Q":
			ss.log.Info("sshlink: menu quit")
			fmt.Fprintln(out, "Bye.")
			return 0
		default:
			fmt.Fprintln(out, bad)
		}
	}
}

// replace replaces the user's device: the old one keeps working until a code from the new one
// is confirmed; then the user's other sessions end (the SSH sessions if the user said so).
func (ss *session) replace(ctx context.Context, am AccountManager, in *lineInput, out, errOut io.Writer) int {
	endSSH := false
	if ss.srv.EndSessions != nil {
		var err error
		if endSSH, err = ss.yesNo(in, out, promptEndSSH); err != nil {
			return ss.fail(ctx, err, in, errOut)
		}
	}
	ss.log.Info("sshlink: replacing the device", "end_ssh_sessions", endSSH)
	fmt.Fprintln(out)
	r := &watchReplacer{AccountManager: am, ss: ss, endSSH: endSSH}
	ss.setAsking(false)
	if err := enroll.TerminalReplace(ctx, r, ss.user, in, out); err != nil {
		return ss.fail(ctx, err, in, errOut)
	}
	ss.log.Info("sshlink: device replaced", "end_ssh_sessions", endSSH)
	if endSSH {
		fmt.Fprintln(out, "Your open SSH sessions were ended; log in again with the new phone.")
	} else if ss.srv.EndSessions != nil {
		fmt.Fprintln(out, "Your open SSH sessions keep running.")
	}
	return 0
}

// renew gives the user new recovery codes, after a confirmation.
func (ss *session) renew(ctx context.Context, am AccountManager, in *lineInput, out, errOut io.Writer) int {
	yes, err := ss.yesNo(in, out, promptRenew)
	if err != nil {
		return ss.fail(ctx, err, in, errOut)
	}
	if !yes {
		fmt.Fprintln(out, msgNothingChange)
		return 0
	}
	if err := ss.stopReason(); err != nil {
		return ss.fail(ctx, err, in, errOut) // a reset came in while the question waited
	}
	codes, err := am.RenewRecovery(ctx, ss.user)
	if err != nil {
		return ss.fail(ctx, err, in, errOut)
	}
	ss.log.Info("sshlink: recovery codes renewed")
	fmt.Fprintln(out, "New recovery codes for "+ss.user+": the ones you had before no longer work.")
	writeRecoveryCodes(out, codes)
	return 0
}

// fail explains err to the user and returns exit status 1.
func (ss *session) fail(ctx context.Context, err error, in *lineInput, errOut io.Writer) int {
	fmt.Fprintln(errOut, ss.explain(ctx, err, in.err != nil))
	return 1
}

// ask prints prompt and reads one line. Until a flow that asks for a code takes over, the
// session's idle message speaks of an answer, not a code.
func (ss *session) ask(in *lineInput, out io.Writer, prompt string) (string, error) {
	fmt.Fprint(out, prompt)
	ss.setAsking(true)
	line, err := in.readLine()
	if err != nil {
		fmt.Fprintln(out)
		if errors.Is(err, io.EOF) {
			return "", errNoAnswer
		}
	}
	return line, err
}

// yesNo asks a question whose default is no, until the answer is one of y, yes, n, no or empty.
func (ss *session) yesNo(in *lineInput, out io.Writer, prompt string) (bool, error) {
	for {
		answer, err := ss.ask(in, out, prompt)
		if err != nil {
			return false, err
		}
		switch strings.ToLower(strings.TrimSpace(answer)) {
		case "y", "yes":
			return true, nil
		case "", "n", "no":
			return false, nil
		}
		fmt.Fprintln(out, msgBadYesNo)
	}
}

// watchReplacer is the session's view of its replacement: it starts none once the session was
// stopped, arms the link-expiry timer, remembers how the replacement ended for the final
// message, and at confirmation ends the user's other sessions.
type watchReplacer struct {
	AccountManager
	ss     *session
	endSSH bool
}

func (r *watchReplacer) BeginReplace(ctx context.Context, user string) (enroll.Link, enroll.Binding, error) {
	if err := r.ss.stopReason(); err != nil {
		return enroll.Link{}, "", err
	}
	link, binding, err := r.AccountManager.BeginReplace(ctx, user)
	if err == nil {
		r.ss.setReplace(func(st *replaceState) { st.begun = true })
		r.ss.began(link)
	}
	return link, binding, err
}

func (r *watchReplacer) ConfirmReplace(ctx context.Context, user string, binding enroll.Binding, code string) ([]string, error) {
	codes, err := r.AccountManager.ConfirmReplace(ctx, user, binding, code)
	if err == nil {
		r.ss.setReplace(func(st *replaceState) { st.confirmed = true })
		r.ss.replaced(r.endSSH)
	}
	return codes, err
}

func (r *watchReplacer) CancelReplace(ctx context.Context, user string, binding enroll.Binding) error {
	err := r.AccountManager.CancelReplace(ctx, user, binding)
	r.ss.setReplace(func(st *replaceState) { st.cancelled, st.cancelErr = err == nil, err })
	return err
}

// replaced ends the user's other sessions after the device was replaced: their other
// connections to this listener, their portal sessions, and their SSH sessions through the
// front door when endSSH is set.
func (ss *session) replaced(endSSH bool) {
	n := ss.srv.endUser(ss.user, errReplaced, ss)
	if ss.srv.EndSessions != nil {
		n += ss.srv.EndSessions(ss.user, endSSH)
	}
	ss.log.Info("sshlink: the user's other sessions ended after the replacement", "sessions", n, "ssh", endSSH)
}

// writeRecoveryCodes prints the one showing of renewed recovery codes and what they are for,
// as enroll.Terminal does after a link.
func writeRecoveryCodes(out io.Writer, codes []string) {
	fmt.Fprintln(out)
	fmt.Fprintln(out, "Your recovery codes (shown only this once):")
	fmt.Fprintln(out)
	for _, c := range codes {
		fmt.Fprintf(out, "    %s\n", c)
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "If your phone is lost or broken, type one of these at the \"Verification code:\" prompt")
	fmt.Fprintln(out, "instead of a code from the app. Each code works only once.")
	fmt.Fprintln(out, "Keep them somewhere safe and away from your phone: print them, or put them in a password manager.")
}

// lineInput reads the client's answers one line at a time without reading ahead, so that the
// flow the menu hands over to (enroll.TerminalReplace) gets all the input that follows. Lines
// end in "\n", "\r\n" or a bare "\r"; a "\n" right after a "\r" belongs to the same line end,
// also when the next reader is the flow's. It remembers that the input ended, so that the
// flow's error can be told apart from an internal one.
type lineInput struct {
	r      io.Reader
	skipLF bool  // the last line ended in "\r": drop a "\n" that comes right after it
	err    error // the reader's error, once it had one
	max    int   // bytes a line may have; 0 means maxLine (readLineMax)
	b      [1]byte
}

func (li *lineInput) Read(p []byte) (int, error) {
	for {
		n, err := li.r.Read(p)
		if err != nil {
			li.err = err
		}
		if n > 0 && li.skipLF {
			li.skipLF = false
			if p[0] == '\n' {
				n = copy(p, p[1:n])
				if n == 0 && err == nil {
					continue
				}
			}
		}
		return n, err
	}
}

// readLineMax is readLine for a line of up to n bytes (a pasted public key), on a pty too.
func (li *lineInput) readLineMax(n int) (string, error) {
	if e, ok := li.r.(*lineEditor); ok {
		old := e.max
		e.max = n
		defer func() { e.max = old }()
	}
	old := li.max
	li.max = n
	defer func() { li.max = old }()
	return li.readLine()
}

// readLine returns the next line without its end. Input that ends in the middle of a line
// gives that line; the next call gets the error.
func (li *lineInput) readLine() (string, error) {
	var b []byte
	for {
		n, err := li.Read(li.b[:])
		if n == 1 {
			switch c := li.b[0]; c {
			case '\n', '\r':
				li.skipLF = c == '\r'
				return string(b), nil
			default:
				if len(b) < lineLimit(li.max) {
					b = append(b, c)
				}
			}
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) > 0 {
				return string(b), nil
			}
			return "", err
		}
	}
}
