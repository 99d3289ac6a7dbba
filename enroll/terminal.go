package enroll

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mdp/qrterminal/v3"
)

// Terminal runs the text device-link flow for user: it starts a link, shows the QR code, the
// otpauth URI and the grouped secret on out, then reads codes from in, one per line, until one
// is accepted, and then prints the recovery codes with what they are for. Wrong codes are
// counted by the Linker, not here: the store checks at most MaxConfirmTries codes per link and
// voids it at the next attempt (ErrVoided), which ends the flow; so does any other error.
//
// The binding Begin returns lives only in this call, so only this flow (this console process,
// this SSH channel) can confirm the link it started; once Terminal returns, the link can only
// expire. in need not be a terminal (a pipe works, so the flow can be scripted); lines may end
// in "\n", "\r\n" or a bare "\r" (raw-mode pty). The output has no escape sequences: the QR
// code is drawn with Unicode half blocks and bare "\n" line ends.
func Terminal(ctx context.Context, l Linker, user string, in io.Reader, out io.Writer) error {
	link, binding, err := l.Begin(ctx, user)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Linking an authenticator app for %s.\n", user)
	fmt.Fprintln(out, "Scan this QR code with Google Authenticator or any TOTP app. It is shown only once.")
	fmt.Fprintln(out)
	if err := writeQR(out, link.URI); err != nil {
		fmt.Fprintln(out, "(The QR code cannot be drawn; type the secret below into the app instead.)")
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "otpauth URI: %s\n", link.URI)
	fmt.Fprintf(out, "Secret: %s\n", GroupSecret(link.Secret))
	fmt.Fprintln(out)
	fmt.Fprintf(out, "Confirm with a code from the app before %s.\n", formatTime(link.ExpiresAt))

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
				return fmt.Errorf("no code given; the link stays pending until %s, then you can start again", formatTime(link.ExpiresAt))
			}
			return fmt.Errorf("reading the code: %w; the link stays pending until %s, then you can start again", err, formatTime(link.ExpiresAt))
		}
		codes, err := l.Confirm(ctx, user, binding, strings.TrimSpace(code))
		switch {
		case err == nil:
			fmt.Fprintf(out, "Device linked for %s. Log in with your password and a code from the app.\n", user)
			writeRecoveryCodes(out, codes)
			return nil
		case errors.Is(err, ErrBadCode):
			fmt.Fprintln(out, "That code did not match. Check the phone's clock is set automatically, or wait for the next code, and try again.")
		default:
			return err
		}
	}
	return fmt.Errorf("%w %d times; the link stays pending until %s, then you can start again",
		ErrBadCode, MaxConfirmTries+1, formatTime(link.ExpiresAt))
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
