package totp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
)

// rfcSecret is the SHA1 key of RFC 4226 Appendix D and RFC 6238 Appendix B.
var rfcSecret = []byte("12345678901234567890")

// codeAt is the 6-digit code for secret at counter, as a test helper.
func codeAt(secret []byte, counter uint64) string {
	var c [Digits]byte
	formatCode(truncated(secret, counter), &c)
	return string(c[:])
}

func TestRFC6238Vectors(t *testing.T) {
	// RFC 6238 Appendix B, SHA1 column (8 digits).
	tests := []struct {
		unix int64
		step uint64
		want string
	}{
		{59, 0x1, "94287082"},
		{1111111109, 0x23523EC, "07081804"},
		{1111111111, 0x23523ED, "14050471"},
		{1234567890, 0x273EF07, "89005924"},
		{2000000000, 0x3F940AA, "69279037"},
		{20000000000, 0x27BC86AA, "65353130"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.unix), func(t *testing.T) {
			now := time.Unix(tt.unix, 0)
			if got := Step(now); got != tt.step {
				t.Fatalf("Step(%d) = %#x, want %#x", tt.unix, got, tt.step)
			}
			if got := fmt.Sprintf("%08d", truncated(rfcSecret, tt.step)%100000000); got != tt.want {
				t.Errorf("8-digit code = %s, want %s", got, tt.want)
			}
			// The 6-digit code is the last six digits; Verify must take it.
			six := tt.want[2:]
			step, err := Verify(rfcSecret, six, now, 0, 0)
			if err != nil || step != tt.step {
				t.Errorf("Verify(%s) = %d, %v; want %d, nil", six, step, err, tt.step)
			}
		})
	}
}

func TestRFC4226Vectors(t *testing.T) {
	// RFC 4226 Appendix D: HOTP codes for counters 0..9.
	want := []string{"755224", "287082", "359152", "969429", "338314",
		"254676", "287922", "162583", "399871", "520489"}
	for c, w := range want {
		if got := codeAt(rfcSecret, uint64(c)); got != w {
			t.Errorf("counter %d: got %s, want %s", c, got, w)
		}
	}
}

// TestAgainstPquerna cross-checks the HOTP code with the library the rest of
// the ecosystem uses, over many counters and several key lengths.
func TestAgainstPquerna(t *testing.T) {
	for _, n := range []int{1, 10, 20, 32, 64, 100} {
		secret := bytes.Repeat([]byte{byte(n)}, n)
		for c := uint64(0); c < 200; c++ {
			counter := c * 7919
			want, err := hotp.GenerateCodeCustom(EncodeSecret(secret), counter, hotp.ValidateOpts{
				Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1,
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := codeAt(secret, counter); got != want {
				t.Fatalf("len %d counter %d: got %s, pquerna %s", n, counter, got, want)
			}
		}
	}
}

// TestAgainstOathtool checks Verify against codes from the real oathtool
// binary, so the package agrees with an independent implementation. It skips
// when oathtool is missing, except under CI=true, where it fails.
func TestAgainstOathtool(t *testing.T) {
	bin, err := exec.LookPath("oathtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("oathtool not installed (required in CI): %v", err)
		}
		t.Skip("oathtool not installed")
	}
	times := []string{
		"2026-01-01 00:00:00 UTC",
		"2026-01-01 00:00:29 UTC",
		"2026-01-01 00:00:30 UTC",
		"2031-07-15 12:34:56 UTC",
		"1999-12-31 23:59:59 UTC",
	}
	for i := 0; i < 6; i++ {
		secret, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			secret = rfcSecret
		}
		for _, ts := range times {
			now, err := time.Parse("2006-01-02 15:04:05 MST", ts)
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "--totp", "-b", EncodeSecret(secret), "--now", ts).Output()
			if err != nil {
				t.Fatalf("oathtool: %v", err)
			}
			code := strings.TrimSpace(string(out))
			if got := codeAt(secret, Step(now)); got != code {
				t.Errorf("%s secret %s: got %s, oathtool %s", ts, EncodeSecret(secret), got, code)
			}
			if step, err := Verify(secret, code, now, 0, 0); err != nil || step != Step(now) {
				t.Errorf("%s: Verify(oathtool code %s) = %d, %v", ts, code, step, err)
			}
		}
	}
}

func TestStep(t *testing.T) {
	edge := time.Unix(1767225600, 0) // 2026-01-01 00:00:00 UTC, a step boundary
	tests := []struct {
		name string
		t    time.Time
		want uint64
	}{
		{"epoch", time.Unix(0, 0), 0},
		{"before epoch", time.Unix(-1, 0), 0},
		{"edge", edge, 58907520},
		{"just before edge", edge.Add(-time.Nanosecond), 58907519},
		{"end of step", edge.Add(Period - time.Nanosecond), 58907520},
		{"next step", edge.Add(Period), 58907521},
	}
	for _, tt := range tests {
		if got := Step(tt.t); got != tt.want {
			t.Errorf("%s: Step = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestVerify(t *testing.T) {
	secret := []byte("gatekeeper-test-key!")
	edge := time.Unix(1767225600, 0)
	cur := Step(edge)
	at := func(step uint64) string { return codeAt(secret, step) }

	tests := []struct {
		name     string
		code     string
		now      time.Time
		skew     int
		last     uint64
		wantStep uint64
		wantErr  error
	}{
		{"current step", at(cur), edge, 1, 0, cur, nil},
		{"current step skew 0", at(cur), edge, 0, 0, cur, nil},
		{"spaces ignored", at(cur)[:3] + " " + at(cur)[3:], edge, 0, 0, cur, nil},
		{"previous step skew 0", at(cur - 1), edge, 0, 0, 0, ErrMismatch},
		{"previous step skew 1", at(cur - 1), edge, 1, 0, cur - 1, nil},
		{"next step skew 1", at(cur + 1), edge, 1, 0, cur + 1, nil},
		{"two back skew 1", at(cur - 2), edge, 1, 0, 0, ErrMismatch},
		{"two back skew 2", at(cur - 2), edge, 2, 0, cur - 2, nil},
		{"two ahead skew 2", at(cur + 2), edge, 2, 0, cur + 2, nil},
		{"three ahead skew 2", at(cur + 3), edge, 2, 0, 0, ErrMismatch},
		{"negative skew is 0", at(cur - 1), edge, -5, 0, 0, ErrMismatch},
		{"replay same step", at(cur), edge, 1, cur, 0, ErrReplay},
		{"older step than last", at(cur - 1), edge, 1, cur, 0, ErrReplay},
		{"last in the future", at(cur), edge, 1, cur + 1, 0, ErrReplay},
		{"newer step than last", at(cur + 1), edge, 1, cur, cur + 1, nil},
		{"step right after last", at(cur), edge, 1, cur - 1, cur, nil},
		{"wrong code", wrongCode(secret, cur, 3), edge, 1, 0, 0, ErrMismatch},
		// 1 ns before the edge the clock is still in step cur-1.
		{"before edge skew 0", at(cur), edge.Add(-time.Nanosecond), 0, 0, 0, ErrMismatch},
		{"before edge skew 1", at(cur), edge.Add(-time.Nanosecond), 1, 0, cur, nil},
		{"before edge own step", at(cur - 1), edge.Add(-time.Nanosecond), 0, 0, cur - 1, nil},
		{"end of step", at(cur), edge.Add(Period - time.Nanosecond), 0, 0, cur, nil},
		{"after step skew 0", at(cur), edge.Add(Period), 0, 0, 0, ErrMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			step, err := Verify(secret, tt.code, tt.now, tt.skew, tt.last)
			if !errors.Is(err, tt.wantErr) || step != tt.wantStep {
				t.Fatalf("Verify(%q, skew %d, last %d) = %d, %v; want %d, %v",
					tt.code, tt.skew, tt.last, step, err, tt.wantStep, tt.wantErr)
			}
		})
	}
}

func TestVerifyEmptySecret(t *testing.T) {
	// Anyone can compute an empty key's codes: they must never pass.
	now := time.Unix(1767225600, 0)
	for _, s := range [][]byte{nil, {}} {
		if _, err := Verify(s, codeAt(nil, Step(now)), now, 1, 0); !errors.Is(err, ErrMismatch) {
			t.Errorf("empty secret %#v: %v, want ErrMismatch", s, err)
		}
	}
}

// wrongCode returns a code that matches no step within skew of cur.
func wrongCode(secret []byte, cur uint64, skew uint64) string {
	for v := 0; ; v++ {
		c := fmt.Sprintf("%06d", v)
		ok := true
		for s := cur - skew; s <= cur+skew; s++ {
			ok = ok && codeAt(secret, s) != c
		}
		if ok {
			return c
		}
	}
}

// TestVerifyPrefersNewest uses a key whose codes at two adjacent steps
// collide (found by search), so the code matches both steps.
func TestVerifyPrefersNewest(t *testing.T) {
	secret := []byte("collide-00593676")
	now := time.Unix(1767225600, 0)
	cur := Step(now)
	if codeAt(secret, cur) != "486358" || codeAt(secret, cur+1) != "486358" {
		t.Fatal("fixture no longer collides")
	}
	tests := []struct {
		last     uint64
		wantStep uint64
		wantErr  error
	}{
		{0, cur + 1, nil},
		{cur - 1, cur + 1, nil},
		{cur, cur + 1, nil},
		{cur + 1, 0, ErrReplay},
	}
	for _, tt := range tests {
		step, err := Verify(secret, "486358", now, 1, tt.last)
		if step != tt.wantStep || !errors.Is(err, tt.wantErr) {
			t.Errorf("last %d: got %d, %v; want %d, %v", tt.last, step, err, tt.wantStep, tt.wantErr)
		}
	}
}

func TestVerifyNoNegativeSteps(t *testing.T) {
	// At the epoch, skew 2 must not wrap around to huge counters.
	now := time.Unix(0, 0)
	for _, c := range []uint64{1<<64 - 1, 1<<64 - 2} {
		if _, err := Verify(rfcSecret, codeAt(rfcSecret, c), now, 2, 0); !errors.Is(err, ErrMismatch) {
			t.Errorf("code of counter %d accepted or odd error: %v", c, err)
		}
	}
	// Step 0 exists, but 0 is also "no step used yet", so it can never be
	// accepted: report it as used.
	if _, err := Verify(rfcSecret, codeAt(rfcSecret, 0), now, 2, 0); !errors.Is(err, ErrReplay) {
		t.Errorf("step 0: %v, want ErrReplay", err)
	}
	if step, err := Verify(rfcSecret, codeAt(rfcSecret, 2), now, 2, 0); err != nil || step != 2 {
		t.Errorf("step 2 at epoch with skew 2: %d, %v", step, err)
	}
	if _, err := Verify(rfcSecret, codeAt(rfcSecret, 0), time.Unix(-3600, 0), 2, 0); !errors.Is(err, ErrMismatch) {
		t.Errorf("before epoch: %v, want ErrMismatch", err)
	}
}

func TestVerifySkewClamped(t *testing.T) {
	now := time.Unix(1767225600, 0)
	cur := Step(now)
	if _, err := Verify(rfcSecret, codeAt(rfcSecret, cur-maxSkew), now, 1<<30, 0); err != nil {
		t.Errorf("code at -maxSkew rejected: %v", err)
	}
	if _, err := Verify(rfcSecret, wrongCode(rfcSecret, cur, maxSkew+1), now, 1<<30, 0); !errors.Is(err, ErrMismatch) {
		t.Errorf("huge skew: %v", err)
	}
}

func TestVerifyMalformed(t *testing.T) {
	now := time.Unix(1767225600, 0)
	tests := []string{
		"",
		"      ",
		"12345",
		"1234567",
		"12345a",
		"12345\n",
		"\t123456",
		"+12345",
		"-12345",
		"12345.",
		"１２３４５６", // fullwidth digits
		"١٢٣٤٥٦", // Arabic-Indic digits
		"123456\x00",
		strings.Repeat("1", 1<<20),
		strings.Repeat(" ", 1<<20) + "123456",
	}
	for _, code := range tests {
		if _, err := Verify(rfcSecret, code, now, 1, 0); !errors.Is(err, ErrMalformed) {
			name := code
			if len(name) > 20 {
				name = name[:20] + "..."
			}
			t.Errorf("Verify(%q) = %v, want ErrMalformed", name, err)
		}
	}
	// Spaces anywhere are fine.
	code := codeAt(rfcSecret, Step(now))
	for _, c := range []string{" " + code, code + " ", code[:2] + "  " + code[2:4] + " " + code[4:]} {
		if _, err := Verify(rfcSecret, c, now, 0, 0); err != nil {
			t.Errorf("Verify(%q) = %v", c, err)
		}
	}
}

func TestNewSecret(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 20 || len(b) != 20 || bytes.Equal(a, b) {
		t.Fatalf("secrets: %x %x", a, b)
	}
}

func TestEncodeSecret(t *testing.T) {
	tests := []struct {
		in   []byte
		want string
	}{
		{rfcSecret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"},
		{[]byte("Hello!\xde\xad\xbe\xef"), "JBSWY3DPEHPK3PXP"},
		{[]byte("ab"), "MFRA"}, // no '=' padding
		{nil, ""},
	}
	for _, tt := range tests {
		if got := EncodeSecret(tt.in); got != tt.want {
			t.Errorf("EncodeSecret(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestURI(t *testing.T) {
	secret := rfcSecret
	tests := []struct {
		issuer, account string
		want            string
	}{
		{"gatekeeper", "alice",
			"otpauth://totp/gatekeeper:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=gatekeeper&algorithm=SHA1&digits=6&period=30"},
		{"Example HPC", "alice",
			"otpauth://totp/Example%20HPC:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Example%20HPC&algorithm=SHA1&digits=6&period=30"},
		{"A:B&C=D?/", "bob.smith",
			"otpauth://totp/A%3AB&C=D%3F%2F:bob.smith?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=A%3AB%26C%3DD%3F%2F&algorithm=SHA1&digits=6&period=30"},
		{"R&D #1 ü", "x_y-z",
			"otpauth://totp/R&D%20%231%20%C3%BC:x_y-z?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=R%26D%20%231%20%C3%BC&algorithm=SHA1&digits=6&period=30"},
		{"", "carol",
			"otpauth://totp/carol?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=SHA1&digits=6&period=30"},
	}
	for _, tt := range tests {
		got := URI(tt.issuer, tt.account, secret)
		if got != tt.want {
			t.Errorf("URI(%q, %q)\n got %s\nwant %s", tt.issuer, tt.account, got, tt.want)
		}
		if strings.Contains(tt.issuer, ":") {
			// Apps (and pquerna/otp) decode the label before splitting it at
			// ':', so an issuer with ':' cannot round-trip; the key URI format
			// forbids it. The escaped form above is the best there is.
			continue
		}
		// What an app sees when it parses the URI.
		key, err := otp.NewKeyFromURL(got)
		if err != nil {
			t.Fatalf("parse %s: %v", got, err)
		}
		if key.Type() != "totp" || key.Issuer() != tt.issuer || key.AccountName() != tt.account ||
			key.Secret() != EncodeSecret(secret) || key.Period() != 30 || key.Digits() != otp.DigitsSix ||
			key.Algorithm() != otp.AlgorithmSHA1 {
			t.Errorf("parsed %s: type %q issuer %q account %q secret %q period %d digits %v alg %v",
				got, key.Type(), key.Issuer(), key.AccountName(), key.Secret(), key.Period(), key.Digits(), key.Algorithm())
		}
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte("12345678901234567890"), "287082", int64(59), 1, uint64(0))
	f.Add([]byte{}, "", int64(0), 0, uint64(0))
	f.Add([]byte("k"), "12 34 56", int64(-1), -3, uint64(1<<64-1))
	f.Add([]byte("k"), "١٢٣٤٥٦", int64(1<<62), 1<<40, uint64(5))
	f.Fuzz(func(t *testing.T, secret []byte, code string, unix int64, skew int, last uint64) {
		now := time.Unix(unix, 0)
		step, err := Verify(secret, code, now, skew, last)
		switch {
		case err == nil:
			if step <= last {
				t.Fatalf("accepted step %d <= last %d", step, last)
			}
			cur := floorStep(now)
			d := int64(step) - cur
			if d < -maxSkew || d > maxSkew || d < -int64(max(skew, 0)) || d > int64(max(skew, 0)) {
				t.Fatalf("accepted step %d outside window of %d ± %d", step, cur, skew)
			}
			if got := codeAt(secret, step); got != strings.ReplaceAll(code, " ", "") {
				t.Fatalf("accepted %q but step %d has code %s", code, step, got)
			}
		case errors.Is(err, ErrMalformed), errors.Is(err, ErrMismatch), errors.Is(err, ErrReplay):
			if step != 0 {
				t.Fatalf("error %v with step %d", err, step)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	secret := rfcSecret
	now := time.Unix(1767225600, 0)
	code := codeAt(secret, Step(now)-1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(secret, code, now, 1, 0); err != nil {
			b.Fatal(err)
		}
	}
}
