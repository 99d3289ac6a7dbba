package sshlink

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestLineEditor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        string
		wantLines []string
		wantEcho  string
		wantErr   error
	}{
		{"enter", "123456\r", []string{"123456"}, "123456\r\n", io.EOF},
		{"cr lf is one enter", "12\r\n34\n", []string{"12", "34"}, "12\r\n34\r\n", io.EOF},
		{"typed ahead", "1\r2\r", []string{"1", "2"}, "1\r\n2\r\n", io.EOF},
		{"backspace and ^H", "129\x7f3\x08\x084\r", []string{"14"}, "129\b \b3\b \b\b \b4\r\n", io.EOF},
		{"backspace on an empty line", "\x7f1\r", []string{"1"}, "1\r\n", io.EOF},
		{"^U erases the line", "99\x151\r", []string{"1"}, "99\b \b\b \b1\r\n", io.EOF},
		{"escape sequences dropped", "1\x1b[A\x1bOB\x1b[1;5C\x1bx2\r", []string{"12"}, "12\r\n", io.EOF},
		{"controls and non-ASCII dropped", "1\t\x00é2\r", []string{"12"}, "12\r\n", io.EOF},
		{"^C aborts", "12\x033\r", nil, "12^C\r\n", errAborted},
		{"^D aborts", "\x04", nil, "\r\n", errAborted},
		{"long line capped", strings.Repeat("7", maxLine+5) + "\r", []string{strings.Repeat("7", maxLine)},
			strings.Repeat("7", maxLine) + "\a\a\a\a\a\r\n", io.EOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var echo bytes.Buffer
			// One byte per read, as a person types, must give the same result as one read.
			for _, r := range []io.Reader{strings.NewReader(tc.in), &oneByteReader{s: tc.in}} {
				echo.Reset()
				br := bufio.NewReader(&lineEditor{r: r, echo: &echo})
				var lines []string
				var err error
				for {
					var l string
					if l, err = br.ReadString('\n'); err != nil {
						break
					}
					lines = append(lines, strings.TrimSuffix(l, "\n"))
				}
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("%T: error %v, want %v", r, err, tc.wantErr)
				}
				if strings.Join(lines, "|") != strings.Join(tc.wantLines, "|") {
					t.Errorf("%T: lines %q, want %q", r, lines, tc.wantLines)
				}
				if echo.String() != tc.wantEcho {
					t.Errorf("%T: echo %q, want %q", r, echo.String(), tc.wantEcho)
				}
			}
		})
	}
}

type oneByteReader struct{ s string }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	p[0] = r.s[0]
	r.s = r.s[1:]
	return 1, nil
}

func TestCRLFWriter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		writes []string
		want   string
	}{
		{[]string{"a\nb\n"}, "a\r\nb\r\n"},
		{[]string{"a\r\nb"}, "a\r\nb"},
		{[]string{"a\r", "\nb\n"}, "a\r\nb\r\n"},
		{[]string{"\n\n"}, "\r\n\r\n"},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		w := &crlfWriter{w: &buf}
		for _, s := range tc.writes {
			if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
				t.Fatalf("Write(%q) = %d, %v", s, n, err)
			}
		}
		if buf.String() != tc.want {
			t.Errorf("%q → %q, want %q", tc.writes, buf.String(), tc.want)
		}
	}
}
