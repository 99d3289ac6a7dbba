package enroll

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/argon2"

	"gatekeeper/gatekeeper/store"
)

// RecoveryCodes is how many recovery codes a device link comes with.
const RecoveryCodes = 10

// codeAlphabet is lowercase letters and digits without the ones easily mistaken for another
// (0/o, 1/l): 32 symbols, so each character carries 5 bits.
const codeAlphabet = "abcdefghijkmnpqrstuvwxyz23456789"

// Recovery code shape: 10 characters (50 bits) shown as xxxx-xxxx-xx.
const recoveryChars = 10

// Argon2id parameters of the recovery code hashes (OWASP's minimum for argon2id: 19 MiB, one
// pass). One computation per login attempt, so a guess costs the guesser as much as it costs us.
const (
	argonTime    = 1
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	saltSize     = 16
	// maxRecoveryLen bounds a normalised answer: hostile input is not hashed.
	maxRecoveryLen = 64
)

// randomCode returns n characters from codeAlphabet, uniformly (256 is a multiple of 32).
func randomCode(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random code: %w", err)
	}
	for i := range b {
		b[i] = codeAlphabet[b[i]%byte(len(codeAlphabet))]
	}
	return string(b), nil
}

// group inserts a dash after every fourth character: "abcdefghjk" → "abcd-efgh-jk".
func group(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}

// NewRecoveryCodes returns RecoveryCodes fresh random codes in the form "abcd-efgh-jk" (50 bits
// each).
func NewRecoveryCodes() ([]string, error) {
	codes := make([]string, RecoveryCodes)
	for i := range codes {
		c, err := randomCode(recoveryChars)
		if err != nil {
			return nil, err
		}
		codes[i] = group(c)
	}
	return codes, nil
}

// normalizeCode is the form a recovery code is hashed in: lowercase, without spaces and dashes.
// ok is false for something that cannot be a code (empty, too long, not letters and digits), so
// that no hash is computed for it.
func normalizeCode(code string) (n string, ok bool) {
	n = store.NormalizeTyped(code)
	if n == "" || len(n) > maxRecoveryLen {
		return "", false
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return "", false
		}
	}
	return n, true
}

// hashRecovery is the stored form of a normalised code.
func hashRecovery(salt []byte, normalized string) []byte {
	return argon2.IDKey([]byte(normalized), salt, argonTime, argonMemory, argonThreads, store.RecoveryHashSize)
}

// RecoverySet is the stored form of a set of recovery codes: a fresh salt and the codes'
// hashes under it.
type RecoverySet struct {
	Salt   []byte
	Hashes [][]byte
}

// SetOn makes rs user u's recovery codes, replacing any u had. It is cheap: call it inside
// store.Update, with rs hashed before it.
func (rs RecoverySet) SetOn(u *store.User) {
	u.RecoverySalt, u.Recovery = rs.Salt, rs.Hashes
}

// newRecoverySet makes RecoveryCodes new recovery codes, to be shown once, and their stored
// form. It stops with ctx's error when ctx ends: a caller that has gone away would never see
// the codes, so nothing may store them.
func newRecoverySet(ctx context.Context) (codes []string, rs RecoverySet, err error) {
	if codes, err = NewRecoveryCodes(); err != nil {
		return nil, RecoverySet{}, err
	}
	if rs, err = HashRecovery(ctx, codes); err != nil {
		return nil, RecoverySet{}, err
	}
	return codes, rs, nil
}

// HashRecovery returns the stored form of codes (for example the scratch codes of an imported
// google-authenticator file) under a fresh salt. Codes are letters and digits (case, spaces and
// dashes do not count).
//
// It is slow on purpose, one argon2id computation per code, so it is called before
// store.Update and never inside: bbolt holds its one writer lock, which every login needs,
// while the update function runs, and the etcd store runs it again on a conflict. It checks
// ctx before each code and returns ctx's error once ctx has ended.
func HashRecovery(ctx context.Context, codes []string) (RecoverySet, error) {
	if len(codes) == 0 {
		return RecoverySet{}, errors.New("no recovery codes given")
	}
	normalized := make([]string, len(codes))
	for i, c := range codes {
		n, ok := normalizeCode(c)
		if !ok {
			return RecoverySet{}, fmt.Errorf("recovery code %d is not 1 to %d letters and digits", i+1, maxRecoveryLen)
		}
		normalized[i] = n
	}
	rs := RecoverySet{Salt: make([]byte, saltSize)}
	if _, err := rand.Read(rs.Salt); err != nil {
		return RecoverySet{}, fmt.Errorf("recovery salt: %w", err)
	}
	for _, n := range normalized {
		if err := ctx.Err(); err != nil {
			return RecoverySet{}, err
		}
		rs.Hashes = append(rs.Hashes, hashRecovery(rs.Salt, n))
	}
	return rs, nil
}

// VerifyRecovery reports whether answer is one of active user u's unused recovery codes, and if
// so removes it from u.Recovery, so that it works once. It is meant for the login check inside
// store.Update: the removal is written in the same transaction that accepts the code. Case,
// spaces and dashes in answer do not count.
//
// Timing: every answer that has the shape of a recovery code costs exactly one argon2id
// computation of the same cost, whoever the user is. A user with no recovery codes, no salt or
// no active device is hashed against a dummy salt and then refused, so that how long the
// answer takes does not tell whether the user has codes. The result is compared against every
// stored hash in constant time. Only an answer refused by its shape alone (normalised: empty,
// longer than 64 characters, or not letters and digits) costs no hash: that refusal depends on
// nothing but the answer, which the caller already knows, so it reveals nothing about the
// user. The front door splits answers the same way, by shape alone: one that looks like a code
// from the app is checked as one, anything else goes here.
func VerifyRecovery(u *store.User, answer string) bool {
	n, ok := normalizeCode(answer)
	if !ok {
		return false
	}
	salt, stored := u.RecoverySalt, u.Recovery
	usable := u.State == store.StateActive && len(stored) > 0 && len(salt) > 0
	if !usable {
		// The same work against a dummy salt and no hashes: a refusal that takes as long.
		salt, stored = make([]byte, saltSize), nil
	}
	h := hashRecovery(salt, n)
	match := -1
	for i, c := range stored {
		if subtle.ConstantTimeCompare(h, c) == 1 {
			match = i
		}
	}
	if match < 0 {
		return false
	}
	// A new slice: the caller's old one may be shared.
	u.Recovery = slices.Delete(slices.Clone(u.Recovery), match, match+1)
	return true
}
