package enroll

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gatekeeper/gatekeeper/store"
)

// requireTool returns the path of an external program the test needs. Locally a missing tool
// skips the test; in CI (CI=true) it fails it, so that a broken install step cannot hide.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed: %v", name, err)
		}
		t.Skipf("%s is not installed: %v", name, err)
	}
	return p
}

// oathCodes asks oathtool for the codes of a base32 secret at the steps from at-30s to at+30s.
func oathCodes(t *testing.T, oathtool, secret string, at time.Time) []string {
	t.Helper()
	out, err := exec.Command(oathtool, "--totp", "-b", secret,
		"-N", fmt.Sprintf("@%d", at.Add(-30*time.Second).Unix()), "-w", "2").Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	codes := strings.Fields(string(out))
	if len(codes) != 3 {
		t.Fatalf("oathtool printed %q, want 3 codes", out)
	}
	return codes
}

// session runs Terminal with pipes, as a script or a pty would drive it.
type session struct {
	in    *io.PipeWriter
	lines chan string // output lines as they are printed
	done  chan error  // Terminal's result
	all   chan string // the whole output, after Terminal returned
}

func startTerminal(t *testing.T, l Linker, user string) *session {
	t.Helper()
	return startFlow(t, func(in io.Reader, out io.Writer) error { return Terminal(context.Background(), l, user, in, out) })
}

// startFlow runs a terminal flow (Terminal or TerminalReplace) with pipes.
func startFlow(t *testing.T, run func(in io.Reader, out io.Writer) error) *session {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &session{in: inW, lines: make(chan string, 1000), done: make(chan error, 1), all: make(chan string, 1)}
	go func() {
		var all strings.Builder
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			s.lines <- sc.Text()
		}
		close(s.lines)
		s.all <- all.String()
	}()
	go func() {
		err := run(inR, outW)
		outW.Close()
		inR.Close()
		s.done <- err
	}()
	return s
}

// waitLine returns the first printed line starting with prefix, without the prefix.
func (s *session) waitLine(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("output ended before a line %q", prefix)
			}
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				return rest
			}
		case <-timeout:
			t.Fatalf("no line %q within 10s", prefix)
		}
	}
}

func (s *session) typeLine(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(s.in, line+"\n"); err != nil {
		t.Fatalf("typing %q: %v", line, err)
	}
}

// finish waits for Terminal to return and gives its error and whole output.
func (s *session) finish(t *testing.T) (string, error) {
	t.Helper()
	select {
	case err := <-s.done:
		for range s.lines {
		}
		return <-s.all, err
	case <-time.After(10 * time.Second):
		t.Fatal("Terminal did not return within 10s")
		return "", nil
	}
}

var groupedSecret = regexp.MustCompile(`^[A-Z2-7]{4}( [A-Z2-7]{4})* ?[A-Z2-7]{0,3}$`)

func TestTerminalLinks(t *testing.T) {
	oathtool := requireTool(t, "oathtool")
	clock := &fakeClock{t: time.Now()}
	svc := newService(t, clock, nil)

	s := startTerminal(t, svc, "alice")
	uri := s.waitLine(t, "otpauth URI: ")
	grouped := s.waitLine(t, "Secret: ")
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "otpauth" || u.Host != "totp" {
		t.Fatalf("printed URI %q is not an otpauth://totp URI (%v)", uri, err)
	}
	secret := u.Query().Get("secret")
	if !groupedSecret.MatchString(grouped) || strings.ReplaceAll(grouped, " ", "") != secret {
		t.Errorf("Secret line %q is not the URI's secret %q in groups of 4", grouped, secret)
	}
	s.typeLine(t, oathCodes(t, oathtool, secret, clock.t)[1])
	out, err := s.finish(t)
	if err != nil {
		t.Fatalf("Terminal: %v\n%s", err, out)
	}

	for _, want := range []string{
		"Scan this QR code with Google Authenticator or any TOTP app. It is shown only once.",
		"\notpauth URI: " + uri + "\n",
		"\nSecret: " + grouped + "\n",
		"Code from your app: Device linked for alice. Log in with your password and a code from the app.\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("output has escape sequences:\n%q", out)
	}
	if qr := qrBlock(out); len(qr) < 10 {
		t.Errorf("output has no QR code drawn with half blocks:\n%s", out)
	}
	got := peek(t, svc.Store, "alice")
	if got.State != store.StateActive {
		t.Errorf("state after linking = %s, want active", got.State)
	}

	// The recovery codes follow, once, with what to do with them.
	codes := printedCodes(out)
	if len(codes) != RecoveryCodes {
		t.Fatalf("printed %d recovery codes, want %d:\n%s", len(codes), RecoveryCodes, out)
	}
	for _, want := range []string{"shown only this once", `at the "Verification code:" prompt`, "works only once",
		"somewhere safe", "Linking a new device replaces them."} {
		if !strings.Contains(out, want) {
			t.Errorf("recovery code explanation lacks %q:\n%s", want, out)
		}
	}
	if !VerifyRecovery(&got, codes[len(codes)-1]) {
		t.Error("a printed recovery code is not one the store knows")
	}
}

// printedCodes returns the indented recovery code lines of Terminal's output.
func printedCodes(out string) []string {
	var codes []string
	for _, l := range strings.Split(out, "\n") {
		if c, ok := strings.CutPrefix(l, "    "); ok && recoveryCodeRE.MatchString(c) {
			codes = append(codes, c)
		}
	}
	return codes
}

// fakeLinker is a Linker with canned answers, for Terminal's output alone.
type fakeLinker struct {
	codes []string
}

func (f *fakeLinker) Begin(_ context.Context, user string) (Link, Binding, error) {
	return Link{User: user, Issuer: "X", Secret: "JBSWY3DPEHPK3PXP", URI: "otpauth://totp/X:" + user + "?secret=JBSWY3DPEHPK3PXP", ExpiresAt: t0}, "b", nil
}

func (f *fakeLinker) Confirm(context.Context, string, Binding, string) ([]string, error) {
	return f.codes, nil
}

func TestTerminalRecoveryCodes(t *testing.T) {
	tests := []struct {
		name  string
		codes []string
		want  []string // printed lines
		not   string   // must not be printed
	}{
		{"codes", []string{"abcd-efgh-jk", "mnpq-rstu-vw"}, []string{"    abcd-efgh-jk", "    mnpq-rstu-vw"}, ""},
		{"none", nil, nil, "recovery codes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			if err := Terminal(context.Background(), &fakeLinker{codes: tt.codes}, "alice", strings.NewReader("123456\n"), &out); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(out.String(), "\n")
			for _, w := range tt.want {
				if !slices.Contains(lines, w) {
					t.Errorf("output lacks line %q:\n%s", w, out.String())
				}
			}
			if tt.not != "" && strings.Contains(out.String(), tt.not) {
				t.Errorf("output mentions %q:\n%s", tt.not, out.String())
			}
		})
	}
}

// TestTerminalQRDecodes renders the printed half-block QR code to an image and reads it back
// with zbarimg, as a phone camera would.
func TestTerminalQRDecodes(t *testing.T) {
	zbarimg := requireTool(t, "zbarimg")
	svc := newService(t, &fakeClock{t: t0}, nil)
	s := startTerminal(t, svc, "alice")
	uri := s.waitLine(t, "otpauth URI: ")
	s.in.Close()
	out, _ := s.finish(t)

	img := renderQR(t, qrBlock(out))
	file := filepath.Join(t.TempDir(), "qr.png")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := exec.Command(zbarimg, "--raw", "-q", file).Output()
	if err != nil {
		t.Fatalf("zbarimg could not read the printed QR code: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(got)) != uri {
		t.Errorf("QR code holds %q, want the printed URI %q", got, uri)
	}
}

// qrBlock returns the output lines that draw the QR code.
func qrBlock(out string) []string {
	var qr []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" && strings.Trim(l, " █▀▄") == "" && strings.ContainsAny(l, "█▀▄") {
			qr = append(qr, l)
		}
	}
	return qr
}

// renderQR turns half-block lines into an image as a dark terminal shows them: a space is two
// dark modules, a full block two light ones, and the terminal around the code is dark too, so
// only the code's own quiet zone is light. 4 pixels a module.
func renderQR(t *testing.T, lines []string) image.Image {
	t.Helper()
	const scale, border = 4, 4
	width := 0
	for _, l := range lines {
		width = max(width, len([]rune(l)))
	}
	h := 2 * len(lines)
	img := image.NewGray(image.Rect(0, 0, (width+2*border)*scale, (h+2*border)*scale))
	set := func(x, y int) {
		for dy := range scale {
			for dx := range scale {
				img.SetGray((x+border)*scale+dx, (y+border)*scale+dy, color.Gray{Y: 255})
			}
		}
	}
	for row, l := range lines {
		for col, r := range []rune(l) {
			top, bottom := true, true // light?
			switch r {
			case ' ':
				top, bottom = false, false
			case '▀':
				bottom = false
			case '▄':
				top = false
			case '█':
			default:
				t.Fatalf("unexpected %q in QR line %q", r, l)
			}
			if top {
				set(col, 2*row)
			}
			if bottom {
				set(col, 2*row+1)
			}
		}
	}
	return img
}

// TestTerminalWrongCodes: the store checks MaxConfirmTries wrong codes, the next one voids the
// link, and the flow ends with the message that says to start again.
func TestTerminalWrongCodes(t *testing.T) {
	oathtool := requireTool(t, "oathtool")
	clock := &fakeClock{t: t0}
	svc := newService(t, clock, nil)

	s := startTerminal(t, svc, "alice")
	secret := strings.ReplaceAll(s.waitLine(t, "Secret: "), " ", "")
	valid := oathCodes(t, oathtool, secret, clock.t)
	var wrong []string
	for c := 0; len(wrong) < MaxConfirmTries; c++ {
		if code := fmt.Sprintf("%06d", c); !slices.Contains(valid, code) {
			wrong = append(wrong, code)
		}
	}
	for _, code := range wrong {
		s.typeLine(t, code)
	}
	// The next attempt is not even checked: a valid code no longer helps.
	s.typeLine(t, valid[1])
	out, err := s.finish(t)
	if !errors.Is(err, ErrVoided) || err.Error() != "too many wrong codes: this link was cancelled; start again" {
		t.Errorf("Terminal error = %v, want ErrVoided with its message", err)
	}
	if n := strings.Count(out, "Code from your app: "); n != MaxConfirmTries+1 {
		t.Errorf("asked for a code %d times, want %d", n, MaxConfirmTries+1)
	}
	if n := strings.Count(out, "That code did not match. Check the phone's clock"); n != MaxConfirmTries {
		t.Errorf("explained %d mismatches, want %d:\n%s", n, MaxConfirmTries, out)
	}
	got := peek(t, svc.Store, "alice")
	if got.State != store.StateNone || got.Secret != nil {
		t.Errorf("state = %s with a secret %v, want none without one", got.State, got.Secret != nil)
	}
	if ev := events(t, svc.Store, "alice"); ev[len(ev)-1].Kind != EventLinkVoided {
		t.Errorf("last audit event %s, want %s", ev[len(ev)-1].Kind, EventLinkVoided)
	}
	// Linking starts again at once, with a new secret.
	l, _ := mustBegin(t, svc, "alice")
	if l.Secret == secret {
		t.Error("the new link reused the voided secret")
	}
}

// TestTerminalBinding: the console flow keeps its binding to itself; another process that
// knows the user's name (and even a valid code) cannot confirm the link, and the flow can.
func TestTerminalBinding(t *testing.T) {
	oathtool := requireTool(t, "oathtool")
	clock := &fakeClock{t: t0}
	svc := newService(t, clock, nil)

	s := startTerminal(t, svc, "alice")
	secret := strings.ReplaceAll(s.waitLine(t, "Secret: "), " ", "")
	valid := oathCodes(t, oathtool, secret, clock.t)
	// A second console: Begin is refused while the link is pending, and guessing the binding
	// neither counts nor checks the (valid) code.
	var out2 strings.Builder
	if err := Terminal(context.Background(), svc, "alice", strings.NewReader(valid[1]+"\n"), &out2); !errors.Is(err, ErrPending) {
		t.Errorf("second console = %v, want ErrPending", err)
	}
	for _, b := range []Binding{"", "guess", Binding(strings.Repeat("A", 26))} {
		if _, err := svc.Confirm(context.Background(), "alice", b, valid[1]); !errors.Is(err, ErrStartedElsewhere) {
			t.Errorf("Confirm with binding %q = %v, want ErrStartedElsewhere", string(b), err)
		}
	}
	if u := peek(t, svc.Store, "alice"); u.ConfirmTries != 0 || u.State != store.StatePending {
		t.Errorf("after foreign confirmations: state %s, %d tries counted; want pending, 0", u.State, u.ConfirmTries)
	}
	s.typeLine(t, valid[1])
	out, err := s.finish(t)
	if err != nil {
		t.Fatalf("Terminal: %v\n%s", err, out)
	}
	if n := len(printedCodes(out)); n != RecoveryCodes {
		t.Errorf("the flow that began the link got %d recovery codes, want %d", n, RecoveryCodes)
	}
}

func TestTerminalNoCode(t *testing.T) {
	clock := &fakeClock{t: t0}
	svc := newService(t, clock, nil)
	var out strings.Builder
	err := Terminal(context.Background(), svc, "alice", strings.NewReader(""), &out)
	want := "no code given; the link stays pending until " + formatTime(t0.Add(10*time.Minute)) + ", then you can start again"
	if err == nil || err.Error() != want {
		t.Errorf("Terminal with empty input = %v, want %q", err, want)
	}
	if got := peek(t, svc.Store, "alice"); got.State != store.StatePending {
		t.Errorf("state = %s, want pending", got.State)
	}
}

func TestTerminalRefused(t *testing.T) {
	clock := &fakeClock{t: t0}
	svc := newService(t, clock, nil)
	mustBegin(t, svc, "alice")
	var out strings.Builder
	err := Terminal(context.Background(), svc, "alice", strings.NewReader("123456\n"), &out)
	if !errors.Is(err, ErrPending) {
		t.Errorf("Terminal for a pending user = %v, want ErrPending", err)
	}
	if out.Len() != 0 {
		t.Errorf("refused Terminal printed:\n%s", out.String())
	}
}

func TestLineReader(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"123456\n654321\n", []string{"123456", "654321"}},
		{"123456\r\n654321\r\n", []string{"123456", "654321"}},
		{"123456\r654321\r", []string{"123456", "654321"}},
		{"123456", []string{"123456"}},
		{"\n\n", []string{"", ""}},
		{"\r\r\n", []string{"", ""}},
		{strings.Repeat("9", 5000) + "\n1\n", []string{strings.Repeat("9", maxLine), "1"}},
	}
	for _, tt := range tests {
		lr := &lineReader{r: bufio.NewReader(strings.NewReader(tt.in))}
		var got []string
		for {
			l, err := lr.readLine()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("readLine(%q): %v", tt.in, err)
				}
				break
			}
			got = append(got, l)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("lines of %q = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestGroupSecret(t *testing.T) {
	tests := map[string]string{
		"":                                 "",
		"ABC":                              "ABC",
		"ABCD":                             "ABCD",
		"ABCDEFGHIJ":                       "ABCD EFGH IJ",
		"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP": "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP",
	}
	for in, want := range tests {
		if got := GroupSecret(in); got != want {
			t.Errorf("GroupSecret(%q) = %q, want %q", in, got, want)
		}
	}
}
