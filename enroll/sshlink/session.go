package sshlink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"gatekeeper/enroll"
	"gatekeeper/gatekeeper/store"
)

// Why a session's input ended early. enroll.Terminal wraps its reader's error with %w, so the
// session can tell the user what happened in plain words.
var (
	errAborted      = errors.New("aborted")
	errIdle         = errors.New("no input for too long")
	errLinkExpired  = errors.New("the link expired")
	errTooMuchInput = errors.New("too much input")
	errReset        = errors.New("an admin reset the account")
	errReplaced     = errors.New("the device was replaced in another session")
	errNoAnswer     = errors.New("no answer given")
)

// startReq is the request that starts the flow: "shell", or "exec" with its command.
type startReq struct {
	kind    string
	command string
}

// session is one authenticated session channel. run owns it; serveRequests answers the
// channel's requests meanwhile, and pump feeds the client's input to the flow.
type session struct {
	srv    *Server
	ctx    context.Context
	conn   *ssh.ServerConn
	nc     net.Conn
	ch     ssh.Channel
	reqs   <-chan *ssh.Request
	user   string
	remote netip.AddrPort
	ticket string
	// linked is whether the user has a linked device and proved both factors at login.
	linked bool
	log    *slog.Logger

	// pty is set by serveRequests before it hands over the start request.
	pty      bool
	start    chan startReq
	reqsDone chan struct{}

	// pr and pw carry the client's input from pump to the flow; closing pw with an error is
	// how a timeout or an oversized input interrupts a flow waiting for a line.
	pr *io.PipeReader
	pw *io.PipeWriter

	mu      sync.Mutex
	ended   bool
	stopped error // why the session was stopped (a timeout, a reset), nil while it runs
	link    enroll.Link
	timers  []*time.Timer
	// asking is set while the menu waits for an answer rather than a code.
	asking bool
	// replacement is how the menu's device replacement went.
	replacement replaceState
}

// newSession prepares the session of an accepted channel; run serves it. Everything stop uses
// exists from here on, so that a reset may stop the session before run has started.
func newSession(ss *session) *session {
	ss.start = make(chan startReq, 1)
	ss.reqsDone = make(chan struct{})
	ss.pr, ss.pw = io.Pipe()
	return ss
}

// run serves the session until the flow is over, and ends it with the exit status.
func (ss *session) run() {
	defer ss.pr.Close()
	go ss.serveRequests()

	var st startReq
	select {
	case st = <-ss.start:
	case <-ss.reqsDone:
		return // the client closed the session without asking for anything
	case <-ss.ctx.Done():
		return
	}
	// From here on the idle and link-expiry timers bound the session, not the grace time.
	_ = ss.nc.SetDeadline(time.Time{})
	ss.mu.Lock()
	ss.timers = append(ss.timers, time.AfterFunc(ss.srv.idleTimeout(), func() { ss.stop(errIdle) }))
	ss.mu.Unlock()
	go ss.pump()

	started := time.Now()
	status := ss.flow(st)
	ss.mu.Lock()
	ss.ended = true
	for _, t := range ss.timers {
		t.Stop()
	}
	ss.mu.Unlock()
	ss.log.Info("sshlink: session ended", "exit_status", status,
		"duration", time.Since(started).Round(time.Millisecond).String())

	// exit-status before EOF and CLOSE, or some clients report exit 0.
	_, _ = ss.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
	_ = ss.ch.CloseWrite()
	_ = ss.ch.Close()
}

// flow runs the linking flow for the start request and returns the exit status.
func (ss *session) flow(st startReq) int {
	// Without a pty, errors go to stderr, as scripts expect; with one, everything goes to the
	// terminal, as it would from a program on a real pty.
	var out, errOut io.Writer = ss.ch, ss.ch.Stderr()
	if ss.pty {
		out = &crlfWriter{w: ss.ch}
		errOut = out
	}
	ss.log.Info("sshlink: session started", "request", st.kind, "pty", ss.pty)
	if st.kind == "exec" && st.command != "" && st.command != "link" {
		ss.log.Info("sshlink: command refused", "command", fmt.Sprintf("%.64q", st.command))
		fmt.Fprintln(errOut, "This server only links an authenticator app to your account; it runs no commands.")
		fmt.Fprintln(errOut, "Connect without a command to link your app.")
		return 1
	}
	if ss.ticket != "" {
		if ss.srv.Tickets == nil {
			return 1 // cannot happen: auth accepted the ticket through Tickets
		}
		if err := ss.srv.Tickets.UseTicket(ss.user, ss.ticket, ss.srv.now()); err != nil {
			ss.log.Warn("sshlink: ticket no longer valid", "err", err)
			fmt.Fprintln(errOut, "Your linking ticket is no longer valid: each ticket works once. Ask your admin for a new one.")
			return 1
		}
		ss.log.Info("sshlink: ticket used")
	}

	in := &lineInput{r: ss.pr}
	if ss.pty {
		in.r = &lineEditor{r: ss.pr, echo: ss.ch}
	}
	ctx := enroll.WithDoor(enroll.WithActor(ss.ctx, "ssh-link "+ss.remote.Addr().String()), store.DoorLinking)
	if am, ok := ss.srv.Linker.(AccountManager); ok && ss.linked {
		// Both factors were proved at login: the user may change their credentials.
		return ss.menu(ctx, am, in, out, errOut)
	}
	err := enroll.Terminal(ctx, &watchLinker{Linker: ss.srv.Linker, began: ss.began, stopped: ss.stopReason}, ss.user, in, out)
	if err == nil {
		ss.log.Info("sshlink: device linked")
		return 0
	}
	msg := ss.explain(ctx, err, in.err != nil)
	fmt.Fprintln(errOut, msg)
	return 1
}

// explain turns the flow's error into a message for the user. Internal errors are logged and
// replaced by a message that gives nothing away.
func (ss *session) explain(ctx context.Context, err error, inputEnded bool) string {
	ss.mu.Lock()
	link, asking, rs := ss.link, ss.asking, ss.replacement
	ss.mu.Unlock()
	// What became of a link or replacement left without a code.
	pending := ""
	switch {
	case rs.begun && rs.confirmed:
	case rs.cancelled:
		pending = " The phone replacement was cancelled; your current phone keeps working."
	case rs.begun:
		pending = fmt.Sprintf(" The phone replacement stays pending until %s; your current phone keeps working.", formatTime(link.ExpiresAt))
	case !link.ExpiresAt.IsZero():
		pending = fmt.Sprintf(" The link stays pending until %s; you can start again after that.", formatTime(link.ExpiresAt))
	}
	switch {
	case errors.Is(err, enroll.ErrAlreadyLinked):
		ss.log.Info("sshlink: already linked")
		since := ""
		if st, ok := ss.srv.Linker.(stater); ok {
			if u, err := st.State(ctx, ss.user); err == nil && !u.EnrolledAt.IsZero() {
				since = " (since " + u.EnrolledAt.Local().Format("2 January 2006") + ")"
			}
		}
		if _, ok := ss.srv.Linker.(AccountManager); ok {
			return "Your device is already linked" + since + ". To replace it, connect again and answer the " +
				"\"Verification code:\" prompt with a code from it or a recovery code. Lost both? Ask your admin."
		}
		return "Your device is already linked" + since + ". Lost your phone? Ask your admin."
	case errors.Is(err, errReset):
		ss.log.Info("sshlink: ended by a reset")
		return "An admin reset your account, so this session ends. Connect again to link your app."
	case errors.Is(err, errReplaced):
		ss.log.Info("sshlink: ended by a replacement elsewhere")
		return "Your device was replaced in another session, so this session ends. Connect again with the new phone."
	case errors.Is(err, enroll.ErrPending), errors.Is(err, enroll.ErrExpired),
		errors.Is(err, enroll.ErrNoPending), errors.Is(err, enroll.ErrBadCode),
		errors.Is(err, enroll.ErrVoided), errors.Is(err, enroll.ErrStartedElsewhere),
		errors.Is(err, enroll.ErrNotLinked):
		// The enroll package's messages are written for users (they say when a link expires).
		ss.log.Info("sshlink: link not completed", "reason", err.Error())
		return sentence(err.Error())
	case errors.Is(err, errLinkExpired):
		ss.log.Info("sshlink: link expired while waiting for the code")
		if rs.begun {
			return "The phone replacement expired before a code was entered; your current phone keeps working. Connect again to start a new one."
		}
		return "The link expired before a code was entered. Connect again to start a new one."
	case errors.Is(err, errIdle):
		ss.log.Info("sshlink: idle timeout", "at_menu", asking)
		if asking {
			return fmt.Sprintf("Nothing was typed for %s, so the session ends.", ss.srv.idleTimeout()) + pending
		}
		return fmt.Sprintf("No code was entered for %s, so the session ends.", ss.srv.idleTimeout()) + pending
	case errors.Is(err, errAborted):
		ss.log.Info("sshlink: aborted by the user")
		return "Aborted." + pending
	case errors.Is(err, errTooMuchInput):
		ss.log.Warn("sshlink: too much input")
		return "Too much input." + pending
	case errors.Is(err, errNoAnswer):
		ss.log.Info("sshlink: input ended at the menu")
		return "No answer given, so nothing was changed."
	case inputEnded:
		// enroll.Terminal's own message when the input ended without a code.
		ss.log.Info("sshlink: input ended", "reason", err.Error())
		return sentence(err.Error())
	case ctx.Err() != nil:
		return "The server is shutting down. Please try again in a few minutes."
	default:
		ss.log.Error("sshlink: linking failed", "err", err)
		return "Something went wrong on the server. Please try again later, or ask your admin."
	}
}

// began records the link the flow started and ends the session when the link expires: after
// that no code can confirm it.
func (ss *session) began(link enroll.Link) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.link = link
	if ss.ended {
		return
	}
	d := max(link.ExpiresAt.Sub(ss.srv.now()), 0)
	ss.timers = append(ss.timers, time.AfterFunc(d, func() { ss.stop(errLinkExpired) }))
}

// stop interrupts a flow waiting for input with reason, and reports whether it did (false when
// the flow has ended or was stopped already). A flow stuck writing to a client that reads
// nothing cannot notice, so the connection is closed under it after stopWait.
func (ss *session) stop(reason error) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended || ss.stopped != nil {
		return false
	}
	ss.stopped = reason
	ss.pw.CloseWithError(reason)
	ss.timers = append(ss.timers, time.AfterFunc(stopWait, func() { ss.conn.Close() }))
	return true
}

// finished reports whether the flow has ended.
func (ss *session) finished() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.ended
}

// touch restarts the idle timer: the client is still there.
func (ss *session) touch() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.ended && ss.stopped == nil && len(ss.timers) > 0 {
		ss.timers[0].Reset(ss.srv.idleTimeout())
	}
}

// pump copies the client's input into the pipe the flow reads, up to MaxInput bytes in all.
// It ends when the channel ends or the flow no longer reads (the pipe's reader is closed).
func (ss *session) pump() {
	buf := make([]byte, 4096)
	total := 0
	for {
		n, err := ss.ch.Read(buf)
		if n > 0 {
			ss.touch()
			total += n
			if total > MaxInput {
				ss.pw.CloseWithError(errTooMuchInput)
				return
			}
			if _, werr := ss.pw.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			ss.pw.Close() // the reader sees io.EOF
			return
		}
	}
}

// serveRequests answers the session channel's requests until the channel closes. The first
// "shell" or "exec" starts the flow; a pty makes the flow edit lines itself.
func (ss *session) serveRequests() {
	defer close(ss.reqsDone)
	started := false
	for req := range ss.reqs {
		ok := false
		var st *startReq
		switch req.Type {
		case "pty-req":
			if !started {
				ss.pty = true
				ok = true
			}
		case "env", "window-change":
			ok = true
		case "shell", "exec":
			if started {
				break
			}
			s := startReq{kind: req.Type}
			if req.Type == "exec" {
				var p struct{ Command string }
				if err := ssh.Unmarshal(req.Payload, &p); err != nil {
					break
				}
				s.command = strings.TrimSpace(p.Command)
			}
			started, ok, st = true, true, &s
		case "signal":
			// Ctrl-C sent as a signal by clients without a pty: same as Ctrl-C typed.
			ss.pw.CloseWithError(errAborted)
		}
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
		if st != nil {
			// After the reply, so that the client knows the shell started before output comes.
			ss.start <- *st
		}
	}
}

// setAsking records whether the menu is waiting for an answer (rather than the flow for a code).
func (ss *session) setAsking(b bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.asking = b
}

// setReplace updates what the session knows about its device replacement.
func (ss *session) setReplace(f func(*replaceState)) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f(&ss.replacement)
}

// stopReason is why the session was stopped, or nil.
func (ss *session) stopReason() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.stopped
}

// watchLinker tells the session about the link the flow started, and starts none once the
// session was stopped (a reset that came before the flow began must not be followed by a link).
type watchLinker struct {
	Linker
	began   func(enroll.Link)
	stopped func() error
}

func (l *watchLinker) Begin(ctx context.Context, user string) (enroll.Link, enroll.Binding, error) {
	if err := l.stopped(); err != nil {
		return enroll.Link{}, "", err
	}
	link, binding, err := l.Linker.Begin(ctx, user)
	if err == nil {
		l.began(link)
	}
	return link, binding, err
}

// sentence makes an error message a sentence: capital first letter, final full stop.
func sentence(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// formatTime renders a time for users the way enroll.Terminal does: local time with zone.
func formatTime(t time.Time) string {
	return t.Local().Format("2006-01-02 15:04:05 MST")
}
