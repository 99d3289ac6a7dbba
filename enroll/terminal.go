package enroll

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mdp/qrterminal/v3"
)

// Terminal runs the text device-link flow for user: it starts a link, shows the QR code, the
// otpauth URI and the grouped secret on out, then reads codes from in, one per line, until one
// is accepted, and then prints the recovery codes with what they are for. Wrong codes are
// counted by the Linker, not here: the store checks at most MaxConfirmTries codes per link and
// voids it at the next attempt (ErrVoided), which ends the flow; so does any other error. A
// code refused because the phone's clock is off (*ClockError) gets that message instead of the
// plain "did not match".
//
// The binding Begin returns lives only in this call, so only this flow (this console process,
// this SSH channel) can confirm the link it started; once Terminal returns, the link can only
// expire. in need not be a terminal (a pipe works, so the flow can be scripted); lines may end
// in "\n", "\r\n" or a bare "\r" (raw-mode pty). The output has no escape sequences: the QR
// code is drawn with Unicode half blocks and bare "\n" line ends.
func Terminal(ctx context.Context, l Linker, user string, in io.Reader, out io.Writer) error {
	return runTerminal(ctx, terminalFlow{
		begin:   l.Begin,
		confirm: l.Confirm,
		intro: []string{
			fmt.Sprintf("Linking an authenticator app for %s.", user),
			"Scan this QR code with Google Authenticator or any TOTP app. It is shown only once.",
		},
		done: fmt.Sprintf("Device linked for %s. Log in with your password and a code from the app.", user),
	}, user, in, out)
}

// TerminalReplace runs the text flow that replaces active user's device, as Terminal does for a
// first link, with r's BeginReplace and ConfirmReplace: the device linked now keeps working
// until a code from the new one is accepted, and then the new recovery codes are printed.
//
// A flow that ends without that code (no more input, a read error, ctx ending, an error other
// than a voided or expired replacement) cancels its replacement with CancelReplace, so that the
// user can start again at once rather than wait for it to expire. Only this flow holds the
// binding.
func TerminalReplace(ctx context.Context, r Replacer, user string, in io.Reader, out io.Writer) error {
	return runTerminal(ctx, terminalFlow{
		begin:   r.BeginReplace,
		confirm: r.ConfirmReplace,
		cancel:  r.CancelReplace,
		intro: []string{
			fmt.Sprintf("Replacing the authenticator app of %s.", user),
			"The phone linked now keeps working until a code from the new one is confirmed here.",
			"Scan this QR code with the app on the new phone. It is shown only once.",
		},
		done: fmt.Sprintf("Device replaced for %s. From now on only codes from the new phone work; "+
			"the old phone's codes and the old recovery codes no longer do.", user),
	}, user, in, out)
}

// terminalFlow is what Terminal and TerminalReplace differ in.
type terminalFlow struct {
	begin   func(ctx context.Context, user string) (Link, Binding, error)
	confirm func(ctx context.Context, user string, binding Binding, code string) ([]string, error)
	// cancel, when set, drops what begin started when the flow ends without confirming it.
	cancel func(ctx context.Context, user string, binding Binding) error
	intro  []string
	done   string
}

// cancelTimeout bounds the CancelReplace call of a flow that is ending, also after its own
// context ended (Ctrl-C on the console).
const cancelTimeout = 5 * time.Second

func runTerminal(ctx context.Context, f terminalFlow, user string, in io.Reader, out io.Writer) (err error) {
	link, binding, err := f.begin(ctx, user)
	if err != nil {
		return err
	}
	confirmed := false
	if f.cancel != nil {
		defer func() {
			if confirmed || errors.Is(err, ErrVoided) || errors.Is(err, ErrExpired) || errors.Is(err, ErrNoPending) {
				return // nothing left to cancel
			}
			cctx, stop := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
			defer stop()
			if cerr := f.cancel(cctx, user, binding); cerr != nil {
				err = fmt.Errorf("%w; the replacement stays pending until %s, then you can start again; your current phone keeps working",
					err, formatTime(link.ExpiresAt))
			} else {
				err = fmt.Errorf("%w; the replacement was cancelled and your current phone keeps working", err)
			}
		}()
	}
	for _, line := range f.intro {
		fmt.Fprintln(out, line)
	}
	fmt.Fprintln(out)
	if err := writeQR(out, link.URI); err != nil {
		fmt.Fprintln(out, "(The QR code cannot be drawn; type the secret below into the app instead.)")
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "otpauth URI: %s\n", link.URI)
	fmt.Fprintf(out, "Secret: %s\n", GroupSecret(link.Secret))
	fmt.Fprintln(out)
	fmt.Fprintf(out, "Confirm with a code from the app before %s.\n", formatTime(link.ExpiresAt))

	// What becomes of the link when the flow ends here without a code; a replacement's end says
	// it on the way out, once it knows whether cancelling worked.
	pending := fmt.Sprintf("; the link stays pending until %s, then you can start again", formatTime(link.ExpiresAt))
	if f.cancel != nil {
		pending = ""
	}
	lr := &lineReader{r: bufio.NewReader(in)}
	// The Linker ends the loop (ErrVoided after MaxConfirmTries wrong codes); the bound only
	// keeps a Linker that never gives up from asking forever.
	for try := 1; try <= MaxConfirmTries+1; try++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Fprint(out, "Code from your app: ")
		code, err := lr.readLine()
		if err != nil {
			fmt.Fprintln(out)
			if errors.Is(err, io.EOF) {
				return errors.New("no code given" + pending)
			}
			return fmt.Errorf("reading the code: %w%s", err, pending)
		}
		codes, err := f.confirm(ctx, user, binding, strings.TrimSpace(code))
		var clock *ClockError
		switch {
		case err == nil:
			confirmed = true
			fmt.Fprintln(out, f.done)
			writeRecoveryCodes(out, codes)
			return nil
		case errors.As(err, &clock):
			fmt.Fprintln(out, clock.Error())
		case errors.Is(err, ErrCurrentDeviceCode):
			fmt.Fprintln(out, "That code is from the phone linked now. Type a code from the app on the new phone.")
		case errors.Is(err, ErrUsedCode):
			fmt.Fprintln(out, "That code was used already (each code works once, across phones too). Wait for the next code in the app, then type it.")
		case errors.Is(err, ErrBadCode):
			fmt.Fprintln(out, "That code did not match. Check the phone's clock is set automatically, or wait for the next code, and try again.")
		default:
			return err
		}
	}
	return fmt.Errorf("%w %d times%s", ErrBadCode, MaxConfirmTries+1, pending)
}

// writeRecoveryCodes prints the one showing of the recovery codes and what they are for.
func writeRecoveryCodes(out io.Writer, codes []string) {
	if len(codes) == 0 {
		return
	}
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
	fmt.Fprintln(out, "Linking a new device replaces them.")
}

// GroupSecret splits a base32 secret into groups of four characters separated by spaces, the
// way authenticator apps accept it for typing by hand.
func GroupSecret(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}

// writeQR draws text as a QR code with half blocks. qrterminal panics on a nil code when the
// text cannot be encoded (too long), so that panic is turned into an error here; the drawing
// goes to a buffer first so that a failure leaves no half-drawn code on out.
func writeQR(out io.Writer, text string) (err error) {
	var buf bytes.Buffer
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("QR code for %d bytes: %v", len(text), r)
		}
	}()
	qrterminal.GenerateWithConfig(text, qrterminal.Config{
		Level:          qrterminal.L,
		Writer:         &buf,
		HalfBlocks:     true,
		BlackChar:      qrterminal.BLACK_BLACK,
		WhiteChar:      qrterminal.WHITE_WHITE,
		WhiteBlackChar: qrterminal.WHITE_BLACK,
		BlackWhiteChar: qrterminal.BLACK_WHITE,
		QuietZone:      1,
	})
	_, err = out.Write(buf.Bytes())
	return err
}

// lineReader reads lines ending in "\n", "\r\n" or "\r": a pty in raw mode sends a bare "\r"
// for Enter, a pipe "\n". A "\n" right after a "\r" belongs to the same line end.
type lineReader struct {
	r      *bufio.Reader
	lastCR bool
}

// maxLine bounds a line so that a hostile peer cannot make the reader buffer without limit.
const maxLine = 1024

func (lr *lineReader) readLine() (string, error) {
	var b []byte
	for {
		c, err := lr.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) > 0 {
				return string(b), nil
			}
			return "", err
		}
		if c == '\n' && lr.lastCR {
			lr.lastCR = false
			continue
		}
		lr.lastCR = c == '\r'
		if c == '\n' || c == '\r' {
			return string(b), nil
		}
		if len(b) < maxLine {
			b = append(b, c)
		}
	}
}
