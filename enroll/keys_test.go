package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatekeeper/gatekeeper/store"
)

// keyLine returns pub as a public key line with comment.
func keyLine(t *testing.T, pub any, comment string) string {
	t.Helper()
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	if comment != "" {
		line += " " + comment
	}
	return line
}

// edKey returns a fresh ed25519 public key line with comment and its fingerprint.
func edKey(t *testing.T, comment string) (string, string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	return keyLine(t, pub, comment), ssh.FingerprintSHA256(sp)
}

// rsaKeys are generated once: RSA key generation is slow.
var rsaKeys = sync.OnceValues(func() (small, big *rsa.PrivateKey) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		panic(err)
	}
	big, err = rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return small, big
})

func TestParsePublicKey(t *testing.T) {
	ed, _ := edKey(t, "alice@laptop")
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	small, big := rsaKeys()
	// A certificate: an ed25519 key signed by a CA.
	_, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	caSigner, _ := ssh.NewSignerFromKey(caPriv)
	userPub, _, _ := ed25519.GenerateKey(rand.Reader)
	userSSH, _ := ssh.NewPublicKey(userPub)
	cert := &ssh.Certificate{Key: userSSH, CertType: ssh.UserCert, ValidPrincipals: []string{"alice"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatal(err)
	}
	certLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))

	tests := []struct {
		name        string
		line        string
		wantComment string
		wantErr     string // "" = accepted
	}{
		{"ed25519", ed, "alice@laptop", ""},
		{"ed25519 with spaces", "  " + ed + "  \n", "alice@laptop", ""},
		{"ecdsa", keyLine(t, &ec.PublicKey, ""), "", ""},
		{"rsa 2048", keyLine(t, &big.PublicKey, "big"), "big", ""},
		{"rsa 1024", keyLine(t, &small.PublicKey, ""), "", "RSA key of 1024 bits, at least 2048 needed"},
		{"dsa", "ssh-dss AAAAB3NzaC1kc3MAAACBAP== x", "", "not an SSH public key"},
		{"certificate", certLine, "", "a certificate; register the plain public key"},
		{"empty", "  \n", "", "empty"},
		{"garbage", "hello world", "", "not an SSH public key"},
		{"options", `from="10.0.0.0/8" ` + ed, "", "options before the key"},
		{"two keys", ed + "\n" + ed, "", "one key at a time"},
		{"too long", "ssh-ed25519 " + strings.Repeat("A", 17<<10), "", "too long for a public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, comment, err := ParsePublicKey(tt.line)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePublicKey = %v, want ErrBadKey with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || pub == nil || comment != tt.wantComment {
				t.Fatalf("ParsePublicKey = %v, %q, %v", pub, comment, err)
			}
		})
	}
}

func TestCheckKeyTypeDSA(t *testing.T) {
	// A real DSA key cannot be made with the standard library any more; a key of an unknown
	// type stands in for it: every type outside the list is refused by name.
	sk := "sk-ssh-ed25519@openssh.com"
	line, _ := edKey(t, "")
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkKeyType(pub); err != nil {
		t.Errorf("ed25519 refused: %v", err)
	}
	if err := checkKeyType(fakeKey{typ: "ssh-dss"}); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "key type ssh-dss is not accepted") {
		t.Errorf("dsa: %v", err)
	}
	if err := checkKeyType(fakeKey{typ: sk}); err != nil {
		t.Errorf("security key refused: %v", err)
	}
}

// fakeKey is an ssh.PublicKey of any type name.
type fakeKey struct{ typ string }

func (k fakeKey) Type() string                                 { return k.typ }
func (k fakeKey) Marshal() []byte                              { return []byte(k.typ) }
func (k fakeKey) Verify(data []byte, sig *ssh.Signature) error { return errors.New("no") }

func TestParseFrom(t *testing.T) {
	tests := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{in: []string{"10.1.0.0/16"}, want: []string{"10.1.0.0/16"}},
		{in: []string{"10.1.2.3/16"}, wantErr: true}, // OpenSSH refuses it too
		{in: []string{"2001:db8::1/48"}, wantErr: true},
		{in: []string{"::ffff:10.1.2.3/112"}, wantErr: true},
		{in: []string{"192.0.2.7"}, want: []string{"192.0.2.7/32"}},
		{in: []string{" 2001:db8::/48 ", "2001:db8::1"}, want: []string{"2001:db8::/48", "2001:db8::1/128"}},
		{in: []string{"::ffff:10.0.0.1"}, want: []string{"10.0.0.1/32"}},
		{in: []string{"::ffff:10.0.0.0/104"}, want: []string{"10.0.0.0/8"}},
		{in: []string{"10.0.0.0/8", "10.0.0.0/8", ""}, want: []string{"10.0.0.0/8"}},
		{in: nil, want: nil},
		{in: []string{"::ffff:10.0.0.0/90"}, wantErr: true},
		{in: []string{"fe80::1%eth0"}, want: []string{"fe80::1/128"}}, // the zone is dropped
		{in: []string{"lander.example.org"}, wantErr: true},
		{in: []string{"10.0.0.0/33"}, wantErr: true},
		{in: []string{"*"}, wantErr: true},
		{in: slices.Repeat([]string{"10.0.0.0/8"}, maxFromLen+1), wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseFrom(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrBadKey) {
				t.Errorf("ParseFrom(%q) = %q, %v; want ErrBadKey", tt.in, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseFrom(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestParseAuthorizedKeys(t *testing.T) {
	a, _ := edKey(t, "a@host")
	b, _ := edKey(t, "")
	small, _ := rsaKeys()
	file := strings.Join([]string{
		"# comment",
		"",
		a,
		`from="10.0.0.0/8,192.0.2.7",command="rsync --server \"x\"",no-pty,restrict ` + b,
		`expiry-time="20301231Z" ` + a,
		`expiry-time="203012311530" ` + a,
		`expiry-time="tomorrow" ` + a,
		`from="*.example.org" ` + a,
		`from="!10.0.0.1,10.0.0.0/8" ` + a,
		`from=",," ` + a,
		keyLine(t, &small.PublicKey, ""),
		"not a key",
	}, "\n")
	got, err := ParseAuthorizedKeys([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line    int
		label   string
		from    []string
		command string
		expires time.Time
		dropped []string
		wantErr string
	}{
		{line: 3, label: "a@host"},
		{line: 4, from: []string{"10.0.0.0/8", "192.0.2.7/32"}, command: `rsync --server "x"`, dropped: []string{"no-pty", "restrict"}},
		{line: 5, label: "a@host", expires: time.Date(2030, 12, 31, 0, 0, 0, 0, time.UTC)},
		{line: 6, label: "a@host", expires: time.Date(2030, 12, 31, 15, 30, 0, 0, time.Local)},
		{line: 7, wantErr: "expiry-time"},
		{line: 8, wantErr: "not patterns"},
		{line: 9, wantErr: "not patterns"},
		{line: 10, wantErr: "an empty entry"},
		{line: 11, wantErr: "RSA key of 1024 bits"},
		{line: 12, wantErr: "not an authorized_keys key line"},
	}
	if len(got) != len(tests) {
		t.Fatalf("%d key lines, want %d: %+v", len(got), len(tests), got)
	}
	for i, tt := range tests {
		ik := got[i]
		if ik.Line != tt.line {
			t.Errorf("entry %d is line %d, want %d", i, ik.Line, tt.line)
			continue
		}
		if tt.wantErr != "" {
			if !errors.Is(ik.Err, ErrBadKey) || !strings.Contains(ik.Err.Error(), tt.wantErr) {
				t.Errorf("line %d: error %v, want ErrBadKey with %q", ik.Line, ik.Err, tt.wantErr)
			}
			continue
		}
		if ik.Err != nil || ik.Key.Label != tt.label || !slices.Equal(ik.Key.From, tt.from) || ik.Key.Command != tt.command ||
			!ik.Key.Expires.Equal(tt.expires) || !slices.Equal(ik.Dropped, tt.dropped) || !strings.HasPrefix(ik.Key.PublicKey, "ssh-ed25519 ") {
			t.Errorf("line %d = %+v", ik.Line, ik)
		}
	}

	if _, err := ParseAuthorizedKeys(make([]byte, MaxKeyFileSize+1)); !errors.Is(err, ErrBadKey) {
		t.Errorf("oversized file: %v", err)
	}
	if got, err := ParseAuthorizedKeys(nil); err != nil || len(got) != 0 {
		t.Errorf("empty file = %+v, %v", got, err)
	}
}

// skKey returns a FIDO (sk-ssh-ed25519@openssh.com) public key line.
func skKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blob := ssh.Marshal(struct {
		Name string
		Key  []byte
		App  string
	}{ssh.KeyAlgoSKED25519, pub, "ssh:"})
	line := ssh.KeyAlgoSKED25519 + " " + base64.StdEncoding.EncodeToString(blob)
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
		t.Fatal(err)
	}
	return line
}

// TestParseAuthorizedKeysAsSSHD checks that a line is imported only as sshd would read it: not
// with fewer restrictions (an empty forced command, verify-required on a FIDO key), and not at
// all when sshd refuses the line (an option given twice, an unknown or malformed option).
func TestParseAuthorizedKeysAsSSHD(t *testing.T) {
	a, _ := edKey(t, "")
	sk := skKey(t)
	tests := []struct {
		name    string
		line    string
		command string
		from    []string
		expires time.Time
		dropped []string
		wantErr string
	}{
		// An empty forced command runs nothing; without it the key would run anything.
		{name: "empty command", line: `command="" ` + a, wantErr: `command="" runs nothing`},
		{name: "blank command", line: `command=" " ` + a, wantErr: `command=" " runs nothing`},
		{name: "empty command and restrictions", line: `command="",no-pty ` + a, wantErr: "runs nothing"},
		// sshd refuses these lines outright ("multiple ... clauses", "unknown key option",
		// "missing start quote").
		{name: "command twice", line: `command="echo A",command="/bin/bash" ` + a, wantErr: "command= given twice"},
		{name: "from twice", line: `from="10.0.0.0/24",from="0.0.0.0/0" ` + a, wantErr: "from= given twice"},
		{name: "from twice in other cases", line: `from="10.0.0.0/24",FROM="0.0.0.0/0" ` + a, wantErr: "given twice"},
		{name: "principals twice", line: `principals="a",principals="b",command="x" ` + a, wantErr: "principals= given twice"},
		{name: "misspelt option", line: `no-port-fowarding ` + a, wantErr: `unknown option "no-port-fowarding"`},
		{name: "misspelt option beside a command", line: `command="ls",no-agent-fowarding ` + a, wantErr: "unknown option"},
		{name: "restrict negated", line: `no-restrict ` + a, wantErr: "unknown option"},
		{name: "flag with a value", line: `no-pty="yes",command="ls" ` + a, wantErr: "takes no value"},
		{name: "command without a value", line: `command,no-pty ` + a, wantErr: "needs a value"},
		{name: "unquoted value", line: `from=10.0.0.0/8 ` + a, wantErr: "double quotes"},
		{name: "text after the closing quote", line: `command="ls"x ` + a, wantErr: "double quotes"},
		// from= entries sshd matches with no client: the key would be let in from more places.
		{name: "from with a blank after a comma", line: `from="10.0.0.0/8, 127.0.0.1" ` + a, wantErr: "blanks around one"},
		{name: "from with a trailing comma", line: `from="127.0.0.1," ` + a, wantErr: "an empty entry"},
		{name: "from with an empty entry", line: `from="127.0.0.1,,10.0.0.0/8" ` + a, wantErr: "an empty entry"},
		{name: "from v4-mapped", line: `from="::ffff:127.0.0.1" ` + a, wantErr: "v4-mapped address, which sshd matches with no IPv4 client (write 127.0.0.1)"},
		{name: "from v4-mapped prefix", line: `from="::ffff:10.0.0.0/104" ` + a, wantErr: "v4-mapped"},
		{name: "from list as sshd reads it", line: `from="10.0.0.0/8,127.0.0.1" ` + a, from: []string{"10.0.0.0/8", "127.0.0.1/32"}},
		// verify-required asks for the FIDO key's PIN, which the gatekeeper does not check:
		// a command= does not make up for it.
		{name: "verify-required", line: `verify-required ` + sk, wantErr: "verify-required is not enforced"},
		{name: "verify-required with a command", line: `verify-required,command="ls" ` + sk, wantErr: "verify-required is not enforced"},
		{name: "verify-required in capitals", line: `Verify-Required ` + sk, wantErr: "not enforced"},
		// sshd ignores verify-required on a key that is not a FIDO key.
		{name: "verify-required on a plain key", line: `verify-required ` + a, dropped: []string{"verify-required"}},
		{name: "FIDO key without verify-required", line: `no-verify-required,no-touch-required ` + sk, dropped: []string{"no-verify-required", "no-touch-required"}},
		// What sshd takes stays as it was: option names in any case, the earliest expiry-time,
		// known options that loosen or restrict beside a command.
		{name: "names in capitals", line: `NO-PTY,Command="ls",From="10.0.0.0/8" ` + a, command: "ls", from: []string{"10.0.0.0/8"}, dropped: []string{"NO-PTY"}},
		{name: "earliest expiry-time", line: `expiry-time="20351231Z",expiry-time="20301231Z",expiry-time="20331231Z" ` + a,
			expires: time.Date(2030, 12, 31, 0, 0, 0, 0, time.UTC)},
		{name: "loosening options", line: `port-forwarding,agent-forwarding,X11-forwarding,pty,user-rc,touch-required,environment="A=b" ` + a,
			dropped: []string{"port-forwarding", "agent-forwarding", "X11-forwarding", "pty", "user-rc", "touch-required", `environment="A=b"`}},
		{name: "restrictions beside a command", line: `restrict,no-port-forwarding,no-agent-forwarding,no-x11-forwarding,no-pty,no-user-rc,permitopen="h:1",permitlisten="2",tunnel="0",command="ls" ` + a,
			command: "ls", dropped: []string{"restrict", "no-port-forwarding", "no-agent-forwarding", "no-x11-forwarding", "no-pty", "no-user-rc", `permitopen="h:1"`, `permitlisten="2"`, `tunnel="0"`}},
		{name: "restriction without a command", line: `no-user-rc ` + a, wantErr: "no-user-rc cannot be kept without command="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthorizedKeys([]byte("# keys\n" + tt.line + "\n"))
			if err != nil || len(got) != 1 || got[0].Line != 2 {
				t.Fatalf("ParseAuthorizedKeys = %+v, %v; want line 2", got, err)
			}
			ik := got[0]
			if tt.wantErr != "" {
				if !errors.Is(ik.Err, ErrBadKey) || !strings.Contains(ik.Err.Error(), tt.wantErr) {
					t.Errorf("error %v, want ErrBadKey with %q (key %+v)", ik.Err, tt.wantErr, ik.Key)
				}
				return
			}
			if ik.Err != nil || ik.Key.Command != tt.command || !slices.Equal(ik.Key.From, tt.from) || !ik.Key.Expires.Equal(tt.expires) ||
				!slices.Equal(ik.Dropped, tt.dropped) {
				t.Errorf("= %+v, err %v; want command %q, from %q, expires %v, dropped %q", ik.Key, ik.Err, tt.command, tt.from, tt.expires, tt.dropped)
			}
		})
	}
}

// TestParseAuthorizedKeysLongLines checks that a line longer than any key line is skipped,
// named by its number, and the lines around it are read.
func TestParseAuthorizedKeysLongLines(t *testing.T) {
	a, _ := edKey(t, "a")
	b, _ := edKey(t, "b")
	long := `command="` + strings.Repeat("x", 70<<10) + `" ` + a
	tests := []struct {
		name  string
		lines []string
		want  []int    // line numbers of the entries
		errs  []string // per entry: "" for a key, else a part of the error
	}{
		{name: "long key line between keys", lines: []string{a, long, b},
			want: []int{1, 2, 3}, errs: []string{"", fmt.Sprintf("line of %d bytes", len(long)), ""}},
		{name: "longest line read", lines: []string{strings.Repeat(" ", maxKeyLineLen-len(a)) + a, b},
			want: []int{1, 2}, errs: []string{"", ""}},
		{name: "one byte longer", lines: []string{strings.Repeat(" ", maxKeyLineLen+1-len(a)) + a, b},
			want: []int{1, 2}, errs: []string{"at most 65536", ""}},
		{name: "long comment and blank lines", lines: []string{"# " + strings.Repeat("x", 100<<10), strings.Repeat(" ", 100<<10), b},
			want: []int{3}, errs: []string{""}},
		{name: "long last line without a newline", lines: []string{b, strings.Repeat("y", 200<<10)},
			want: []int{1, 2}, errs: []string{"", "line of 204800 bytes"}},
		{name: "CRLF", lines: []string{a + "\r", "\r", b + "\r"}, want: []int{1, 3}, errs: []string{"", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := strings.Join(tt.lines, "\n")
			if !strings.HasPrefix(tt.name, "long last line") {
				file += "\n"
			}
			got, err := ParseAuthorizedKeys([]byte(file))
			if err != nil {
				t.Fatalf("ParseAuthorizedKeys: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d entries, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, ik := range got {
				switch {
				case ik.Line != tt.want[i]:
					t.Errorf("entry %d is line %d, want %d", i, ik.Line, tt.want[i])
				case tt.errs[i] == "" && (ik.Err != nil || ik.Key.PublicKey == ""):
					t.Errorf("line %d = %+v, %v; want a key", ik.Line, ik.Key, ik.Err)
				case tt.errs[i] != "" && (!errors.Is(ik.Err, ErrBadKey) || !strings.Contains(ik.Err.Error(), tt.errs[i])):
					t.Errorf("line %d: error %v, want ErrBadKey with %q", ik.Line, ik.Err, tt.errs[i])
				}
			}
		})
	}
}

// keyService is a Service with a fake clock and an EndKeySessions hook that records its calls.
func keyService(t *testing.T) (*Service, *fakeClock, *[]string) {
	t.Helper()
	clock := &fakeClock{t: t0}
	s := newService(t, clock, nil)
	s.KeyPolicy = KeyPolicy{AutomationMaxLifetime: 7 * 24 * time.Hour}
	var calls []string
	s.EndKeySessions = func(user, fp string) int {
		calls = append(calls, user+" "+fp)
		return 1
	}
	return s, clock, &calls
}

func TestAddKey(t *testing.T) {
	line, fp := edKey(t, "alice@laptop")
	week := 7 * 24 * time.Hour
	tests := []struct {
		name    string
		nk      NewKey
		by      string
		want    store.Key // checked: Label, Automation, From, Expires, Command
		wantErr error
		errText string
	}{
		{name: "personal", nk: NewKey{PublicKey: line}, by: "uid 0",
			want: store.Key{Label: "alice@laptop"}},
		{name: "personal with label and limits", nk: NewKey{PublicKey: line, Label: "  work\x07 ", From: []string{"192.0.2.7"}, Expires: t0.Add(time.Hour), Command: " uptime "}, by: "uid 0",
			want: store.Key{Label: "work", From: []string{"192.0.2.7/32"}, Expires: t0.Add(time.Hour), Command: "uptime"}},
		{name: "automation default lifetime", nk: NewKey{PublicKey: line, Automation: true, From: []string{"10.1.0.0/16"}}, by: "uid 0",
			want: store.Key{Label: "alice@laptop", Automation: true, From: []string{"10.1.0.0/16"}, Expires: t0.Add(week)}},
		{name: "automation at the limit", nk: NewKey{PublicKey: line, Automation: true, From: []string{"10.1.0.0/16"}, Expires: t0.Add(week)}, by: "uid 0",
			want: store.Key{Label: "alice@laptop", Automation: true, From: []string{"10.1.0.0/16"}, Expires: t0.Add(week)}},
		{name: "automation past the limit", nk: NewKey{PublicKey: line, Automation: true, From: []string{"10.1.0.0/16"}, Expires: t0.Add(week + time.Second)},
			by: "uid 0", wantErr: ErrBadKey, errText: "lives at most"},
		{name: "automation from a /8", nk: NewKey{PublicKey: line, Automation: true, From: []string{"10.1.0.0/16", "10.0.0.0/8"}},
			by: "uid 0", wantErr: ErrBadKey, errText: "at most a /16"},
		{name: "automation from everywhere", nk: NewKey{PublicKey: line, Automation: true, From: []string{"::/0"}},
			by: "uid 0", wantErr: ErrBadKey, errText: "at most a /16 (IPv6: /48) each, not ::/0"},
		{name: "automation from an IPv6 /48", nk: NewKey{PublicKey: line, Automation: true, From: []string{"2001:db8:1::/48"}}, by: "uid 0",
			want: store.Key{Label: "alice@laptop", Automation: true, From: []string{"2001:db8:1::/48"}, Expires: t0.Add(week)}},
		{name: "automation without networks", nk: NewKey{PublicKey: line, Automation: true}, by: "uid 0", wantErr: ErrBadKey, errText: "needs the networks"},
		{name: "expiry in the past", nk: NewKey{PublicKey: line, Expires: t0.Add(-time.Second)}, by: "uid 0", wantErr: ErrBadKey, errText: "in the past"},
		{name: "expiry now", nk: NewKey{PublicKey: line, Expires: t0}, by: "uid 0", wantErr: ErrBadKey, errText: "in the past"},
		{name: "bad network", nk: NewKey{PublicKey: line, From: []string{"example.org"}}, by: "uid 0", wantErr: ErrBadKey},
		{name: "control character in the command", nk: NewKey{PublicKey: line, Command: "ls\nrm"}, by: "uid 0", wantErr: ErrBadKey, errText: "control character"},
		{name: "command too long", nk: NewKey{PublicKey: line, Command: strings.Repeat("x", maxCommandLen+1)}, by: "uid 0", wantErr: ErrBadKey},
		// An empty Command means none (any command): blanks must not turn into that.
		{name: "blank command", nk: NewKey{PublicKey: line, Command: "   "}, by: "uid 0", wantErr: ErrBadKey, errText: "blank"},
		{name: "self without a linked device", nk: NewKey{PublicKey: line}, by: AddedBySelf, wantErr: ErrNotLinked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := keyService(t)
			ctx := WithActor(context.Background(), "uid 0")
			k, err := s.AddKey(ctx, "alice", tt.nk, tt.by)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("AddKey = %v, want %v with %q", err, tt.wantErr, tt.errText)
				}
				if u := peek(t, s.Store, "alice"); len(u.Keys) != 0 {
					t.Errorf("refused key stored: %+v", u.Keys)
				}
				return
			}
			if err != nil {
				t.Fatalf("AddKey: %v", err)
			}
			if k.Fingerprint != fp || k.Label != tt.want.Label || k.Automation != tt.want.Automation || !slices.Equal(k.From, tt.want.From) ||
				!k.Expires.Equal(tt.want.Expires) || k.Command != tt.want.Command || k.AddedBy != tt.by || !k.AddedAt.Equal(t0) ||
				strings.Contains(k.PublicKey, "alice@laptop") {
				t.Errorf("key = %+v, want %+v", k, tt.want)
			}
			u := peek(t, s.Store, "alice")
			if u.State != store.StateNone || len(u.Keys) != 1 || u.Keys[0].Fingerprint != fp {
				t.Errorf("stored = %+v", u)
			}
			ev, _ := s.Store.Events(store.EventQuery{User: "alice"})
			if len(ev) != 1 || ev[0].Kind != store.EventKeyAdded || ev[0].Actor != "uid 0" || !strings.HasPrefix(ev[0].Detail, fp) {
				t.Errorf("audit = %+v", ev)
			}
		})
	}
}

func TestAddKeyRules(t *testing.T) {
	s, _, _ := keyService(t)
	ctx := context.Background()
	line, _ := edKey(t, "")
	if _, err := s.AddKey(ctx, "alice", NewKey{PublicKey: line}, "uid 0"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddKey(ctx, "alice", NewKey{PublicKey: line, Label: "again"}, "uid 0"); !errors.Is(err, ErrKeyExists) {
		t.Errorf("duplicate key: %v, want ErrKeyExists", err)
	}
	// Another user may register the same key.
	if _, err := s.AddKey(ctx, "bob", NewKey{PublicKey: line}, "uid 0"); err != nil {
		t.Errorf("same key for bob: %v", err)
	}
	for i := 1; i < store.MaxKeys; i++ {
		l, _ := edKey(t, "")
		if _, err := s.AddKey(ctx, "alice", NewKey{PublicKey: l}, "uid 0"); err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
	}
	l, _ := edKey(t, "")
	if _, err := s.AddKey(ctx, "alice", NewKey{PublicKey: l}, "uid 0"); !errors.Is(err, ErrTooManyKeys) {
		t.Errorf("key %d: %v, want ErrTooManyKeys", store.MaxKeys+1, err)
	}
	if _, err := s.AddKey(ctx, "../x", NewKey{PublicKey: l}, "uid 0"); !errors.Is(err, store.ErrBadName) {
		t.Errorf("bad name: %v", err)
	}
	keys, err := s.Keys(ctx, "alice")
	if err != nil || len(keys) != store.MaxKeys || keys[0].PublicKey != strings.TrimSpace(line) {
		t.Errorf("Keys = %d keys, %v", len(keys), err)
	}
}

func TestRevokeKey(t *testing.T) {
	s, _, calls := keyService(t)
	ctx := WithActor(context.Background(), "uid 5")
	a, afp := edKey(t, "a")
	b, bfp := edKey(t, "b")
	for _, l := range []string{a, b} {
		if _, err := s.AddKey(ctx, "alice", NewKey{PublicKey: l}, "uid 5"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Store.Update("alice", func(u *store.User) error {
		u.Remembered = []store.Remembered{
			{Fingerprint: afp, Network: "192.0.2.0/24", Since: t0, Until: t0.Add(time.Hour)},
			{Fingerprint: bfp, Network: "192.0.2.0/24", Since: t0, Until: t0.Add(time.Hour)},
			{Fingerprint: afp, Network: "198.51.100.0/24", Since: t0, Until: t0.Add(time.Hour)},
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	k, ended, err := s.RevokeKey(ctx, "alice", " "+afp+"\n")
	if err != nil || k.Fingerprint != afp || ended != 1 {
		t.Fatalf("RevokeKey = %+v, %d, %v", k, ended, err)
	}
	if !slices.Equal(*calls, []string{"alice " + afp}) {
		t.Errorf("EndKeySessions calls %q", *calls)
	}
	u := peek(t, s.Store, "alice")
	if len(u.Keys) != 1 || u.Keys[0].Fingerprint != bfp || len(u.Remembered) != 1 || u.Remembered[0].Fingerprint != bfp {
		t.Errorf("after revoke: keys %+v, remembered %+v", u.Keys, u.Remembered)
	}
	if _, _, err := s.RevokeKey(ctx, "alice", afp); !errors.Is(err, ErrNoKey) {
		t.Errorf("second revoke: %v, want ErrNoKey", err)
	}
	if len(*calls) != 1 {
		t.Errorf("a refused revoke ended sessions: %q", *calls)
	}
	// The last key gone, a user without a device has no record left.
	if _, _, err := s.RevokeKey(ctx, "alice", bfp); err != nil {
		t.Fatal(err)
	}
	if users, err := s.Store.List(); err != nil || len(users) != 0 {
		t.Errorf("records left: %+v, %v", users, err)
	}
	all, _ := s.Store.Events(store.EventQuery{User: "alice"})
	ev := slices.DeleteFunc(all, func(e store.Event) bool { return e.Kind != store.EventKeyRevoked })
	if len(ev) != 2 || ev[0].Actor != "uid 5" || !strings.HasSuffix(ev[0].Detail, "; 1 live sessions ended") {
		t.Errorf("audit = %+v", ev)
	}
	// Without the hook, nothing is ended and nothing breaks.
	s.EndKeySessions = nil
	if _, err := s.AddKey(ctx, "alice", NewKey{PublicKey: a}, "uid 5"); err != nil {
		t.Fatal(err)
	}
	if _, ended, err := s.RevokeKey(ctx, "alice", afp); err != nil || ended != 0 {
		t.Errorf("RevokeKey without hook = %d, %v", ended, err)
	}
}

func TestImportKeys(t *testing.T) {
	s, clock, _ := keyService(t)
	ctx := context.Background()
	a, afp := edKey(t, "a")
	b, bfp := edKey(t, "b")
	c, _ := edKey(t, "c")
	if _, err := s.AddKey(ctx, "alice", NewKey{PublicKey: b}, "uid 0"); err != nil {
		t.Fatal(err)
	}
	past := clock.Now().Add(-48*time.Hour).UTC().Format("20060102") + "Z"
	file := fmt.Sprintf("%s\nno-pty,from=\"10.0.0.0/8\" %s\n%s\nexpiry-time=\"%s\" %s\ncert-authority %s\nfrom=\"10.1.2.3/16\" %s\n", a, a, b, past, c, c, c)
	res, err := s.ImportKeys(ctx, "alice", []byte(file), "uid 0")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Added) != 1 || res.Added[0].Fingerprint != afp || res.Added[0].AddedBy != "uid 0" {
		t.Errorf("added = %+v", res.Added)
	}
	wantSkipped := []struct {
		line int
		err  error
		text string
	}{
		{2, ErrBadKey, "no-pty cannot be kept without command="},
		{3, ErrKeyExists, bfp},
		{4, ErrBadKey, "in the past"},
		{5, ErrBadKey, "cert-authority line names a CA"},
		{6, ErrBadKey, `network "10.1.2.3/16" has host bits set past the /16: did you mean 10.1.0.0/16`},
	}
	if len(res.Skipped) != len(wantSkipped) {
		t.Fatalf("skipped = %+v", res.Skipped)
	}
	for i, w := range wantSkipped {
		sk := res.Skipped[i]
		if sk.Line != w.line || !errors.Is(sk.Err, w.err) || !strings.Contains(sk.Err.Error(), w.text) {
			t.Errorf("skipped[%d] = line %d, %v; want line %d, %v with %q", i, sk.Line, sk.Err, w.line, w.err, w.text)
		}
	}
	if !slices.Equal(res.Skipped[0].Dropped, []string{"no-pty"}) {
		t.Errorf("dropped options of line 2 = %q", res.Skipped[0].Dropped)
	}
	if _, err := s.ImportKeys(ctx, "a b", []byte(a), "uid 0"); !errors.Is(err, store.ErrBadName) {
		t.Errorf("bad name: %v", err)
	}
}
