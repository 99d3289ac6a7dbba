// Package gauth reads the per-user secret files of pam_google_authenticator
// (~/.google_authenticator), so that a site switching to gatekeeper can keep
// every user's phone working.
//
// The format, as written by the google-authenticator command and updated by
// the PAM module:
//
//	DCDCJI3D7DGNPGHAN5W4D37WRE       line 1: the secret, base32 without padding
//	" RATE_LIMIT 3 30 1700000000     at most 3 logins per 30 s (+ recent login times)
//	" WINDOW_SIZE 3                  codes accepted around now, in steps
//	" DISALLOW_REUSE 56666666        each code once (+ time steps already used)
//	" TOTP_AUTH                      time-based codes
//	" STEP_SIZE 30                   optional, seconds per step (default 30)
//	" HOTP_COUNTER 1                 counter-based codes instead (not supported)
//	92200017                         8-digit emergency scratch codes, one use each
//
// The parser is strict: gatekeeper only speaks 30-second TOTP, so a file it
// cannot honour exactly is refused with ErrUnsupported rather than imported
// into something that behaves differently. Error messages name the line but
// never quote file content, because that content is a secret (and ReadFile
// runs as root on files users control).
package gauth

import (
	"bufio"
	"bytes"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// MaxSize is the largest file Parse accepts, and ReadFile's default limit. A
// real file with ten scratch codes and full RATE_LIMIT and DISALLOW_REUSE
// histories (at most 100 entries each) stays well below it.
const MaxSize = 8 << 10

// MaxScratch is the most scratch codes a file may hold: google-authenticator
// writes at most 10, and gatekeeper keeps at most 10 recovery codes.
const MaxScratch = 10

// minSecretBytes is the shortest secret accepted: 80 bits, what the oldest
// google-authenticator versions generated (current ones write 128 bits).
const minSecretBytes = 10

// maxSecretBytes bounds the secret at 512 bits, an HMAC-SHA1 block: longer
// keys gain nothing and only come from a broken or hostile file.
const maxSecretBytes = 64

// Limits the PAM module itself enforces on option values.
const (
	maxWindowSize   = 100
	maxRateAttempts = 100
	maxRateSeconds  = 3600
	maxStepSize     = 60
)

// ErrUnsupported marks a well-formed file that uses a feature gatekeeper does
// not implement (counter-based HOTP, a step size other than 30 seconds).
var ErrUnsupported = errors.New("unsupported google_authenticator file")

// ErrMalformed marks a file that is not a valid google_authenticator file.
var ErrMalformed = errors.New("malformed google_authenticator file")

// RateLimit is pam_google_authenticator's RATE_LIMIT option: at most Attempts
// logins within Seconds. The zero value means no limit was set.
type RateLimit struct {
	Attempts int
	Seconds  int
}

// File is a parsed ~/.google_authenticator file.
type File struct {
	// Secret is the decoded TOTP key.
	Secret []byte
	// SecretBase32 is the secret as written in the file, upper case, no padding.
	SecretBase32 string
	// TOTP reports the TOTP_AUTH option. Without it (and without HOTP_COUNTER,
	// which Parse refuses) pam_google_authenticator accepts no generated codes
	// from this file, only scratch codes; an importer should say so rather than
	// silently turn time-based codes on.
	TOTP bool
	// StepSize is the code period in seconds; always 30 in a parsed file
	// (absent means 30, anything else is ErrUnsupported).
	StepSize int
	// WindowSize is the number of codes accepted around the current one
	// (WINDOW_SIZE; 3 when absent, as in the PAM module).
	WindowSize int
	// RateLimit is the RATE_LIMIT option; zero when absent.
	RateLimit RateLimit
	// DisallowReuse reports the DISALLOW_REUSE option.
	DisallowReuse bool
	// UsedSteps are the time steps (Unix time / StepSize) the PAM module has
	// recorded as used under DISALLOW_REUSE. An importer can start the user's
	// last-used step at their maximum so that a code used through PAM just
	// before the switch cannot be replayed through gatekeeper.
	UsedSteps []uint64
	// Scratch are the unused emergency codes, 8 digits each, in file order,
	// without duplicates.
	Scratch []string
	// Owner is the uid owning the file when it was read by ReadFile, and -1
	// when it came from Parse. The PAM module only trusts a file owned by the
	// user it belongs to; an importer walking home directories should too.
	Owner int
}

// Parse reads a google_authenticator file from r, at most MaxSize bytes.
// Errors wrap ErrMalformed or ErrUnsupported and name the offending line.
func Parse(r io.Reader) (*File, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading google_authenticator file: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxSize)
	}
	return parse(data)
}

// ReadFile opens path without following a symbolic link in its last
// component, insists on a regular file of at most maxSize bytes (MaxSize when
// maxSize <= 0 or larger than MaxSize) and parses it. Meant for an admin
// running as root over users' home directories: a user must not be able to
// make it read /etc/shadow through a symlink, or hang it on a FIFO.
func ReadFile(path string, maxSize int64) (*File, error) {
	if maxSize <= 0 || maxSize > MaxSize {
		maxSize = MaxSize
	}
	// O_NONBLOCK: opening a FIFO must not block waiting for a writer; it is
	// then refused as not regular. O_NOFOLLOW: a symlink fails with ELOOP.
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s: %w: is a symbolic link", path, ErrMalformed)
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w: not a regular file (%s)", path, ErrMalformed, fi.Mode().Type())
	}
	if fi.Size() > maxSize {
		return nil, fmt.Errorf("%s: %w: %d bytes, more than %d", path, ErrMalformed, fi.Size(), maxSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(data)) > maxSize {
		// The file grew between Stat and read.
		return nil, fmt.Errorf("%s: %w: more than %d bytes", path, ErrMalformed, maxSize)
	}
	gf, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		gf.Owner = int(st.Uid)
	}
	return gf, nil
}

// b32 is the alphabet the file uses: RFC 4648 base32, no padding.
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func parse(data []byte) (*File, error) {
	f := &File{StepSize: 30, WindowSize: 3, Owner: -1}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 512), MaxSize+1)
	seenOpt := map[string]bool{}
	seenScratch := map[string]bool{}
	stepSet, hotp := false, false
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if n == 1 {
			secret, enc, err := decodeSecret(line)
			if err != nil {
				return nil, fmt.Errorf("%w: line 1: %v", ErrMalformed, err)
			}
			f.Secret, f.SecretBase32 = secret, enc
			continue
		}
		switch {
		case line == "":
			// A blank line (a trailing newline too many after hand
			// editing) means nothing to the PAM module either.
		case strings.HasPrefix(line, "\" "):
			fields := strings.Fields(line[2:])
			if len(fields) == 0 {
				return nil, fmt.Errorf("%w: line %d: empty option", ErrMalformed, n)
			}
			name, args := fields[0], fields[1:]
			if seenOpt[name] {
				return nil, fmt.Errorf("%w: line %d: option %s given twice", ErrMalformed, n, name)
			}
			seenOpt[name] = true
			if err := f.option(name, args, &stepSet, &hotp); err != nil {
				return nil, fmt.Errorf("%w: line %d: %v", ErrMalformed, n, err)
			}
		case strings.HasPrefix(line, "\""):
			return nil, fmt.Errorf("%w: line %d: option lines start with a double quote and a space", ErrMalformed, n)
		default:
			if !isDigits(line) || len(line) != 8 {
				return nil, fmt.Errorf("%w: line %d: neither an option nor an 8-digit scratch code", ErrMalformed, n)
			}
			if seenScratch[line] {
				continue
			}
			seenScratch[line] = true
			if len(f.Scratch) == MaxScratch {
				return nil, fmt.Errorf("%w: line %d: more than %d scratch codes", ErrMalformed, n, MaxScratch)
			}
			f.Scratch = append(f.Scratch, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %v", ErrMalformed, n+1, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: line 1: empty file, no secret", ErrMalformed)
	}
	if hotp {
		return nil, fmt.Errorf("%w: counter-based (HOTP_COUNTER) codes; gatekeeper supports only time-based TOTP: the user must link a new device", ErrUnsupported)
	}
	if stepSet && f.StepSize != 30 {
		return nil, fmt.Errorf("%w: STEP_SIZE %d; gatekeeper supports only 30-second codes: the user must link a new device", ErrUnsupported, f.StepSize)
	}
	return f, nil
}

// option applies one option line. Values are checked against the PAM
// module's own limits, so anything it would reject is rejected here too.
// Errors are plain; the caller adds ErrMalformed and the line number.
func (f *File) option(name string, args []string, stepSet, hotp *bool) error {
	switch name {
	case "TOTP_AUTH":
		if len(args) != 0 {
			return errors.New("TOTP_AUTH takes no value")
		}
		f.TOTP = true
	case "DISALLOW_REUSE":
		f.DisallowReuse = true
		for _, a := range args {
			v, err := number(a, 1<<62)
			if err != nil {
				return fmt.Errorf("DISALLOW_REUSE: bad time step: %v", err)
			}
			f.UsedSteps = append(f.UsedSteps, v)
		}
	case "WINDOW_SIZE":
		v, err := oneNumber(name, args, 1, maxWindowSize)
		if err != nil {
			return err
		}
		f.WindowSize = v
	case "STEP_SIZE":
		v, err := oneNumber(name, args, 1, maxStepSize)
		if err != nil {
			return err
		}
		f.StepSize, *stepSet = v, true
	case "RATE_LIMIT":
		if len(args) < 2 {
			return errors.New("RATE_LIMIT needs attempts and seconds")
		}
		a, err := oneNumber(name, args[:1], 1, maxRateAttempts)
		if err != nil {
			return err
		}
		s, err := oneNumber(name, args[1:2], 1, maxRateSeconds)
		if err != nil {
			return err
		}
		// The rest are Unix times of recent logins, kept by the PAM module.
		for _, t := range args[2:] {
			if _, err := number(t, 1<<62); err != nil {
				return fmt.Errorf("RATE_LIMIT: bad login time: %v", err)
			}
		}
		f.RateLimit = RateLimit{Attempts: a, Seconds: s}
	case "HOTP_COUNTER":
		if _, err := oneNumber(name, args, 0, 1<<62); err != nil {
			return err
		}
		*hotp = true
	default:
		// Unknown options could change what codes are valid; importing
		// while ignoring them could let in codes PAM refused, or the
		// reverse. Names are all-caps ASCII in real files: only such a
		// name is echoed, anything else might be secret material.
		if isOptionName(name) {
			return fmt.Errorf("unknown option %s", name)
		}
		return errors.New("unknown option")
	}
	return nil
}

func oneNumber(name string, args []string, lo, hi uint64) (int, error) {
	if len(args) != 1 {
		return 0, fmt.Errorf("%s takes one number", name)
	}
	v, err := number(args[0], hi)
	if err != nil || v < lo {
		return 0, fmt.Errorf("%s must be a number from %d to %d", name, lo, hi)
	}
	return int(v), nil
}

// number parses a plain decimal number (no sign, no spaces) not above hi.
func number(s string, hi uint64) (uint64, error) {
	if !isDigits(s) || len(s) > 19 {
		return 0, errors.New("not a decimal number")
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > hi {
		return 0, fmt.Errorf("out of range (at most %d)", hi)
	}
	return v, nil
}

func decodeSecret(line string) ([]byte, string, error) {
	enc := strings.ToUpper(strings.TrimRight(line, "="))
	if enc == "" {
		return nil, "", errors.New("no secret")
	}
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '7') {
			return nil, "", fmt.Errorf("secret is not base32 (bad character at column %d)", i+1)
		}
	}
	// Go's unpadded decoder accepts lengths that cannot come from whole
	// bytes (1, 3 or 6 characters past a multiple of 8) and silently drops
	// data for them, so the length is checked first.
	secret, err := b32.DecodeString(enc)
	if r := len(enc) % 8; r == 1 || r == 3 || r == 6 || err != nil || len(secret) != len(enc)*5/8 {
		return nil, "", fmt.Errorf("secret is not base32 (length %d is not a whole number of bytes)", len(enc))
	}
	if len(secret) > maxSecretBytes {
		return nil, "", fmt.Errorf("secret is %d bits, more than the %d allowed", 8*len(secret), 8*maxSecretBytes)
	}
	if len(secret) < minSecretBytes {
		return nil, "", fmt.Errorf("secret is %d bits, fewer than the %d required", 8*len(secret), 8*minSecretBytes)
	}
	return secret, enc, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isOptionName(s string) bool {
	if len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c == '_') {
			return false
		}
	}
	return true
}
