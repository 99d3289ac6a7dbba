package gauth_test

import (
	"bytes"
	"encoding/base32"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"gatekeeper/gatekeeper/gauth"
	"gatekeeper/gatekeeper/totp"
)

// needTool finds an external program the test relies on: missing, the test
// is skipped on a developer's machine but fails under CI, where
// scripts/install-deps.sh must have installed it.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (Debian package %s); CI must install it", name, pkg)
		}
		t.Skipf("%s not found (Debian package %s)", name, pkg)
	}
	return p
}

// oathCode asks oathtool for the TOTP code of the base32 secret at time at:
// an implementation independent of both gauth and gatekeeper/totp.
func oathCode(t *testing.T, secretB32 string, at time.Time) string {
	t.Helper()
	oath := needTool(t, "oathtool", "oathtool")
	out, err := exec.Command(oath, "--totp", "-b", "--now", at.UTC().Format("2006-01-02 15:04:05 UTC"), secretB32).CombinedOutput()
	if err != nil {
		t.Fatalf("oathtool: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestRealFiles parses files written by the real google-authenticator
// command and checks that the parsed secret yields the codes a phone set up
// from the same file shows (as computed by oathtool from line 1).
func TestRealFiles(t *testing.T) {
	ga := needTool(t, "google-authenticator", "libpam-google-authenticator")
	tests := []struct {
		name    string
		args    []string
		want    gauth.File // Secret, SecretBase32, Scratch, Owner not compared
		scratch int
		err     error
	}{
		{
			name:    "typical",
			args:    []string{"-t", "-d", "-r", "3", "-R", "30", "-w", "3"},
			want:    gauth.File{TOTP: true, StepSize: 30, WindowSize: 3, RateLimit: gauth.RateLimit{Attempts: 3, Seconds: 30}, DisallowReuse: true},
			scratch: 5,
		},
		{
			name:    "wide window, reuse allowed, no rate limit, ten codes",
			args:    []string{"-t", "-D", "-u", "-w", "17", "-e", "10"},
			want:    gauth.File{TOTP: true, StepSize: 30, WindowSize: 17},
			scratch: 10,
		},
		{
			name: "no scratch codes",
			args: []string{"-t", "-d", "-r", "5", "-R", "60", "-W", "-e", "0"},
			want: gauth.File{TOTP: true, StepSize: 30, WindowSize: 3, RateLimit: gauth.RateLimit{Attempts: 5, Seconds: 60}, DisallowReuse: true},
		},
		{
			name: "explicit 30 s step",
			args: []string{"-t", "-d", "-u", "-W", "-S", "30"},
			want: gauth.File{TOTP: true, StepSize: 30, WindowSize: 3, DisallowReuse: true}, scratch: 5,
		},
		{name: "60 s step", args: []string{"-t", "-d", "-u", "-W", "-S", "60"}, err: gauth.ErrUnsupported},
		{name: "counter based", args: []string{"-c", "-u", "-w", "5"}, err: gauth.ErrUnsupported},
	}
	at := time.Date(2024, 5, 17, 12, 0, 10, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "google_authenticator")
			args := append([]string{"-f", "-q", "-C", "-s", path}, tt.args...)
			cmd := exec.Command(ga, args...)
			cmd.Stdin = strings.NewReader("") // any question left would fail, not hang
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("google-authenticator %v: %v\n%s", args, err, out)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := gauth.ReadFile(path, 0)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ReadFile = %v, want %v\nfile:\n%s", err, tt.err, raw)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadFile: %v\nfile:\n%s", err, raw)
			}
			got := *f
			got.Secret, got.SecretBase32, got.Scratch, got.Owner, got.UsedSteps = nil, "", nil, 0, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("options = %+v, want %+v\nfile:\n%s", got, tt.want, raw)
			}
			if f.Owner != os.Geteuid() {
				t.Errorf("Owner = %d, want %d", f.Owner, os.Geteuid())
			}
			line1, rest, _ := strings.Cut(string(raw), "\n")
			if f.SecretBase32 != line1 {
				t.Errorf("SecretBase32 = %q, file has %q", f.SecretBase32, line1)
			}
			// Scratch codes: exactly the 8-digit lines of the file, in order.
			var codes []string
			for _, l := range strings.Split(rest, "\n") {
				if len(l) == 8 && !strings.HasPrefix(l, "\"") {
					codes = append(codes, l)
				}
			}
			if len(codes) != tt.scratch || !reflect.DeepEqual(f.Scratch, codes) {
				t.Errorf("Scratch = %q, want the file's %d codes %q", f.Scratch, tt.scratch, codes)
			}
			// The phone's code (oathtool reading line 1) must log in with the
			// parsed secret, and a code from another step must not.
			code := oathCode(t, line1, at)
			if _, err := totp.Verify(f.Secret, code, at, 0, 0); err != nil {
				t.Errorf("oathtool code %s does not verify with the parsed secret: %v", code, err)
			}
			later := oathCode(t, line1, at.Add(5*time.Minute))
			if _, err := totp.Verify(f.Secret, later, at, 0, 0); err == nil && later != code {
				t.Errorf("code from 5 minutes later verified now")
			}
		})
	}
}

const (
	// secret is 128 bits, what google-authenticator writes today.
	secret = "DCDCJI3D7DGNPGHAN5W4D37WRE"
	// secret80 is 80 bits, what old versions wrote.
	secret80 = "JBSWY3DPEHPK3PXP"
)

func TestParse(t *testing.T) {
	dec := func(s string) []byte {
		b, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	def := func(mod func(f *gauth.File)) *gauth.File {
		f := &gauth.File{Secret: dec(secret), SecretBase32: secret, TOTP: true, StepSize: 30, WindowSize: 3, Owner: -1}
		if mod != nil {
			mod(f)
		}
		return f
	}
	tests := []struct {
		name string
		in   string
		want *gauth.File
	}{
		{"minimal", secret + "\n\" TOTP_AUTH\n", def(nil)},
		{"no final newline", secret + "\n\" TOTP_AUTH", def(nil)},
		{"CRLF", secret + "\r\n\" TOTP_AUTH\r\n12345678\r\n", def(func(f *gauth.File) { f.Scratch = []string{"12345678"} })},
		{"lower case and padding", strings.ToLower(secret) + "======\n\" TOTP_AUTH\n", def(nil)},
		{"80-bit secret", secret80 + "\n\" TOTP_AUTH\n", def(func(f *gauth.File) { f.Secret, f.SecretBase32 = dec(secret80), secret80 })},
		{"secret only", secret + "\n", def(func(f *gauth.File) { f.TOTP = false })},
		{
			"everything, as the PAM module leaves it",
			secret + "\n\" RATE_LIMIT 3 30 1715947200 1715947230\n\" WINDOW_SIZE 17\n\" DISALLOW_REUSE 57198240 57198241\n\" TOTP_AUTH\n\" STEP_SIZE 30\n92200017\n82131936\n",
			def(func(f *gauth.File) {
				f.RateLimit = gauth.RateLimit{Attempts: 3, Seconds: 30}
				f.WindowSize = 17
				f.DisallowReuse = true
				f.UsedSteps = []uint64{57198240, 57198241}
				f.Scratch = []string{"92200017", "82131936"}
			}),
		},
		{"options after codes, blank lines", secret + "\n12345678\n\n\" TOTP_AUTH\n87654321\n\n", def(func(f *gauth.File) { f.Scratch = []string{"12345678", "87654321"} })},
		{"duplicate code kept once", secret + "\n\" TOTP_AUTH\n12345678\n12345678\n", def(func(f *gauth.File) { f.Scratch = []string{"12345678"} })},
		{"ten codes", secret + "\n\" TOTP_AUTH\n" + codes(10), def(func(f *gauth.File) { f.Scratch = strings.Fields(codes(10)) })},
		{"extreme limits", secret + "\n\" TOTP_AUTH\n\" WINDOW_SIZE 100\n\" RATE_LIMIT 100 3600\n", def(func(f *gauth.File) {
			f.WindowSize = 100
			f.RateLimit = gauth.RateLimit{Attempts: 100, Seconds: 3600}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := gauth.Parse(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// codes returns n distinct 8-digit scratch code lines.
func codes(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(strings.Repeat(string(rune('1'+i%9)), 7))
		b.WriteByte(byte('0' + i/9))
		b.WriteByte('\n')
	}
	return b.String()
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		err  error
		msg  string // must appear in the error text
	}{
		{"empty", "", gauth.ErrMalformed, "line 1"},
		{"blank first line", "\n\" TOTP_AUTH\n", gauth.ErrMalformed, "line 1"},
		{"bad base32", "DCDCJI3D7DGNPGHAN5W4D37WR1\n\" TOTP_AUTH\n", gauth.ErrMalformed, "line 1"},
		{"base32 with spaces", "DCDC JI3D 7DGN PGHA N5W4 D37W RE\n\" TOTP_AUTH\n", gauth.ErrMalformed, "line 1"},
		{"impossible base32 length", secret + "A\n\" TOTP_AUTH\n", gauth.ErrMalformed, "line 1"},
		{"short secret", "JBSWY3DP\n\" TOTP_AUTH\n", gauth.ErrMalformed, "line 1"},
		{"long secret", strings.Repeat("A", 200) + "\n\" TOTP_AUTH\n", gauth.ErrMalformed, "line 1"},
		{"HOTP", secret + "\n\" WINDOW_SIZE 5\n\" HOTP_COUNTER 1\n12345678\n", gauth.ErrUnsupported, "HOTP"},
		{"HOTP bad counter", secret + "\n\" HOTP_COUNTER x\n", gauth.ErrMalformed, "line 2"},
		{"60 s step", secret + "\n\" STEP_SIZE 60\n\" TOTP_AUTH\n", gauth.ErrUnsupported, "STEP_SIZE 60"},
		{"step 0", secret + "\n\" STEP_SIZE 0\n\" TOTP_AUTH\n", gauth.ErrMalformed, "line 2"},
		{"7-digit code", secret + "\n\" TOTP_AUTH\n1234567\n", gauth.ErrMalformed, "line 3"},
		{"9-digit code", secret + "\n\" TOTP_AUTH\n123456789\n", gauth.ErrMalformed, "line 3"},
		{"code with letter", secret + "\n\" TOTP_AUTH\n1234567a\n", gauth.ErrMalformed, "line 3"},
		{"signed code", secret + "\n\" TOTP_AUTH\n+1234567\n", gauth.ErrMalformed, "line 3"},
		{"code with space", secret + "\n\" TOTP_AUTH\n1234 5678\n", gauth.ErrMalformed, "line 3"},
		{"eleven codes", secret + "\n\" TOTP_AUTH\n" + codes(11), gauth.ErrMalformed, "line 13"},
		{"unknown option", secret + "\n\" TOTP_AUTH\n\" FROBNICATE\n", gauth.ErrMalformed, "FROBNICATE"},
		{"option twice", secret + "\n\" TOTP_AUTH\n\" TOTP_AUTH\n", gauth.ErrMalformed, "line 3"},
		{"option without space", secret + "\n\"TOTP_AUTH\n", gauth.ErrMalformed, "line 2"},
		{"empty option", secret + "\n\" \n", gauth.ErrMalformed, "line 2"},
		{"TOTP_AUTH with value", secret + "\n\" TOTP_AUTH 1\n", gauth.ErrMalformed, "line 2"},
		{"window 0", secret + "\n\" WINDOW_SIZE 0\n", gauth.ErrMalformed, "line 2"},
		{"window 101", secret + "\n\" WINDOW_SIZE 101\n", gauth.ErrMalformed, "line 2"},
		{"window negative", secret + "\n\" WINDOW_SIZE -3\n", gauth.ErrMalformed, "line 2"},
		{"window two values", secret + "\n\" WINDOW_SIZE 3 4\n", gauth.ErrMalformed, "line 2"},
		{"window huge", secret + "\n\" WINDOW_SIZE 99999999999999999999999\n", gauth.ErrMalformed, "line 2"},
		{"rate limit one value", secret + "\n\" RATE_LIMIT 3\n", gauth.ErrMalformed, "line 2"},
		{"rate limit seconds 0", secret + "\n\" RATE_LIMIT 3 0\n", gauth.ErrMalformed, "line 2"},
		{"rate limit bad time", secret + "\n\" RATE_LIMIT 3 30 x\n", gauth.ErrMalformed, "line 2"},
		{"reuse bad step", secret + "\n\" DISALLOW_REUSE 1 two\n", gauth.ErrMalformed, "line 2"},
		{"too big", secret + "\n\" TOTP_AUTH\n" + strings.Repeat("\n", gauth.MaxSize), gauth.ErrMalformed, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := gauth.Parse(strings.NewReader(tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse = %+v, %v; want %v", f, err, tt.err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
		})
	}
}

// TestErrorsHideSecrets: the files hold secrets, and ReadFile runs as root
// on files users control; an error must not print what it read.
func TestErrorsHideSecrets(t *testing.T) {
	hidden := "SHADOWSECRET"
	for _, in := range []string{
		"root:" + hidden + ":19000:0:99999:7:::\n",
		secret + "\n\" " + strings.ToLower(hidden) + "\n",
		secret + "\n\" " + hidden + "-X\n",
		secret + "\n" + hidden + "\n",
		secret + "\n\" WINDOW_SIZE " + hidden + "\n",
		secret + "\n\" DISALLOW_REUSE " + hidden + "\n",
	} {
		_, err := gauth.Parse(strings.NewReader(in))
		if err == nil {
			t.Fatalf("Parse(%q) succeeded", in)
		}
		if strings.Contains(strings.ToUpper(err.Error()), hidden) {
			t.Errorf("error %q reveals file content", err)
		}
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte(secret+"\n\" TOTP_AUTH\n12345678\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	f, err := gauth.ReadFile(good, 0)
	if err != nil {
		t.Fatalf("ReadFile(regular file): %v", err)
	}
	if f.SecretBase32 != secret || f.Owner != os.Geteuid() || len(f.Scratch) != 1 {
		t.Errorf("ReadFile = %+v", f)
	}

	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, append([]byte(secret+"\n\" TOTP_AUTH\n"), bytes.Repeat([]byte("\n"), 200)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := gauth.ReadFile(big, 0); err != nil {
		t.Errorf("ReadFile(big, default limit): %v", err)
	}
	tests := []struct {
		name, path string
		max        int64
		msg        string
	}{
		{"symlink to a good file", link, 0, "symbolic link"},
		{"fifo", fifo, 0, "not a regular file"},
		{"directory", dir, 0, "not a regular file"},
		{"device", os.DevNull, 0, "not a regular file"},
		{"over the caller's limit", big, 100, "more than 100"},
		{"missing", filepath.Join(dir, "missing"), 0, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { _, err := gauth.ReadFile(tt.path, tt.max); done <- err }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("ReadFile(%s) = %v, want an error saying %q", tt.name, err, tt.msg)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("ReadFile(%s) hangs", tt.name)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		secret + "\n\" TOTP_AUTH\n",
		secret + "\n\" RATE_LIMIT 3 30 1715947200\n\" WINDOW_SIZE 17\n\" DISALLOW_REUSE 57198240\n\" TOTP_AUTH\n92200017\n",
		secret + "\r\n\" HOTP_COUNTER 1\r\n",
		secret + "\n\" STEP_SIZE 60\n",
		strings.ToLower(secret80) + "==\n" + codes(11),
	} {
		f.Add([]byte(s))
	}
	b32 := base32.StdEncoding.WithPadding(base32.NoPadding)
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := gauth.Parse(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, gauth.ErrMalformed) && !errors.Is(err, gauth.ErrUnsupported) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrUnsupported", err)
			}
			return
		}
		if dec, err := b32.DecodeString(got.SecretBase32); err != nil || !bytes.Equal(dec, got.Secret) || len(got.Secret) < 10 || len(got.Secret) > 64 {
			t.Fatalf("secret %q / %x inconsistent", got.SecretBase32, got.Secret)
		}
		if got.StepSize != 30 || got.WindowSize < 1 || got.WindowSize > 100 || len(got.Scratch) > gauth.MaxScratch {
			t.Fatalf("out-of-range result %+v", got)
		}
		for _, c := range got.Scratch {
			if len(c) != 8 || strings.Trim(c, "0123456789") != "" {
				t.Fatalf("bad scratch code %q", c)
			}
		}
	})
}
