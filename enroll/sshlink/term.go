package sshlink

import (
	"io"
)

// maxLine bounds the line the editor collects; a code needs 6 characters, a recovery code 12.
const maxLine = 256

// lineEditor turns the raw input of a pty (which the client does not echo or edit: the server's
// side of a terminal does) into lines ending in "\n". It echoes printable ASCII, erases with
// Backspace (DEL or ^H) and ^U, ends a line with Enter (CR or LF), and ends the input with
// errAborted on ^C or ^D. Escape sequences (arrow keys and the like), other control characters
// and non-ASCII bytes are dropped: a code is digits and letters.
type lineEditor struct {
	r    io.Reader // raw input
	echo io.Writer // the terminal, written raw

	raw    []byte // input read but not looked at yet
	line   []byte // the line being edited
	ready  []byte // finished lines not yet returned
	esc    int    // 0: normal; 1: after ESC; 2: inside a CSI or SS3 sequence
	lastCR bool   // the last byte was a CR: a LF right after it is part of the same Enter
	rerr   error  // the reader's error, for when raw is used up
	max    int    // bytes a line may have; 0 means maxLine
	err    error  // sticky end of input
	buf    [512]byte
}

func (e *lineEditor) Read(p []byte) (int, error) {
	for len(e.ready) == 0 {
		if e.err != nil {
			return 0, e.err
		}
		if len(e.raw) == 0 {
			if e.rerr != nil {
				e.err = e.rerr
				continue
			}
			n, err := e.r.Read(e.buf[:])
			e.raw, e.rerr = e.buf[:n], err
			continue
		}
		var echo []byte
		echo, e.raw = e.edit(e.raw)
		if len(echo) > 0 {
			if _, err := e.echo.Write(echo); err != nil && e.err == nil {
				e.err = err
			}
		}
	}
	n := copy(p, e.ready)
	e.ready = e.ready[n:]
	return n, nil
}

// edit applies raw input to the line until a line is finished or the input ends, and returns
// what to echo and the input left for later (typed ahead after Enter).
func (e *lineEditor) edit(in []byte) (echo, rest []byte) {
	for i, c := range in {
		switch e.esc {
		case 1:
			if c == '[' || c == 'O' {
				e.esc = 2
			} else {
				e.esc = 0 // ESC followed by one character (Alt+key): both dropped
			}
			continue
		case 2:
			if c >= 0x40 && c <= 0x7e {
				e.esc = 0 // the final byte of the sequence
			}
			continue
		}
		afterCR := e.lastCR
		e.lastCR = c == '\r'
		switch {
		case c == '\n' && afterCR:
			// CR LF is one Enter, also when it comes in two reads.
		case c == '\r' || c == '\n':
			echo = append(echo, '\r', '\n')
			e.ready = append(append(e.ready, e.line...), '\n')
			e.line = e.line[:0]
			return echo, in[i+1:]
		case c == 0x7f || c == 0x08:
			if len(e.line) > 0 {
				e.line = e.line[:len(e.line)-1]
				echo = append(echo, "\b \b"...)
			}
		case c == 0x15: // ^U: erase the line
			for range e.line {
				echo = append(echo, "\b \b"...)
			}
			e.line = e.line[:0]
		case c == 0x03 || c == 0x04: // ^C, ^D
			if c == 0x03 {
				echo = append(echo, "^C"...)
			}
			echo = append(echo, '\r', '\n')
			e.err = errAborted
			return echo, nil
		case c == 0x1b:
			e.esc = 1
		case c >= 0x20 && c < 0x7f:
			if len(e.line) < lineLimit(e.max) {
				e.line = append(e.line, c)
				echo = append(echo, c)
			} else {
				echo = append(echo, '\a')
			}
		}
	}
	return echo, nil
}

// lineLimit is max, or maxLine when max is 0.
func lineLimit(max int) int {
	if max > 0 {
		return max
	}
	return maxLine
}

// crlfWriter turns "\n" into "\r\n" for a pty in raw mode, where a bare "\n" moves the cursor
// down without returning it to the left edge. An existing "\r\n" is left alone.
type crlfWriter struct {
	w      io.Writer
	lastCR bool
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	buf := make([]byte, 0, len(p)+len(p)/16+1)
	for _, b := range p {
		if b == '\n' && !c.lastCR {
			buf = append(buf, '\r')
		}
		buf = append(buf, b)
		c.lastCR = b == '\r'
	}
	if _, err := c.w.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}
