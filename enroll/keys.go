package enroll

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"

	"golang.org/x/crypto/ssh"

	"gatekeeper/gatekeeper/store"
)

// SSH keys registered at the gatekeeper (keys.enabled): a user's personal
// keys replace the password as the first factor, and automation keys let
// scripts in without a code from their networks until they expire. These
// are the operations the portal, SSH linking and the admin commands share;
// the front door (package gatekeeper) reads the keys from the store.

// Errors of the key operations. Their messages are fit for the user.
var (
	// ErrBadKey is a public key, option or setting that cannot be
	// registered; the error says why.
	ErrBadKey = errors.New("bad key")
	// ErrKeyExists is a key the user has registered already.
	ErrKeyExists = errors.New("key already registered")
	// ErrNoKey is a fingerprint the user has no key under.
	ErrNoKey = errors.New("no such key")
	// ErrTooManyKeys is an add beyond store.MaxKeys.
	ErrTooManyKeys = errors.New("too many keys")
)

// Who added a key, for store.Key.AddedBy when the user did it themselves.
const AddedBySelf = "self"

// Limits of what a key carries.
const (
	maxLabelLen   = 100
	maxCommandLen = 1024
	maxFromLen    = 32
	// maxKeyLineLen bounds a line of an authorized_keys file.
	maxKeyLineLen = 64 << 10
	// MaxKeyFileSize bounds an authorized_keys file given to ImportKeys.
	MaxKeyFileSize = 1 << 20
)

// NewKey is a key to register.
type NewKey struct {
	// PublicKey is one authorized_keys line: "type base64 [comment]"
	// (options are refused here; ParseAuthorizedKeys reads them).
	PublicKey string
	// Label names the key; empty: the line's comment.
	Label string
	// Automation, From, Expires and Command: see store.Key. Expires zero
	// means never for a personal key, and keys.automation_max_lifetime from
	// now for an automation key.
	Automation bool
	From       []string
	Expires    time.Time
	Command    string
}

// KeyPolicy is what the daemon's config says about keys.
type KeyPolicy struct {
	// AutomationMaxLifetime bounds (and is the default of) an automation
	// key's lifetime (keys.automation_max_lifetime).
	AutomationMaxLifetime time.Duration
}

// DefaultAutomationMaxLifetime is keys.automation_max_lifetime's default:
// 30 days.
const DefaultAutomationMaxLifetime = 720 * time.Hour

// ParsePublicKey reads one public key line ("ssh-ed25519 AAAA... comment")
// and returns the key with its comment. Certificates, DSA and RSA keys under
// 2048 bits are refused.
func ParsePublicKey(line string) (ssh.PublicKey, string, error) {
	line = strings.TrimSpace(line)
	if line == "" {
		return nil, "", fmt.Errorf("%w: empty", ErrBadKey)
	}
	if len(line) > 16<<10 {
		return nil, "", fmt.Errorf("%w: %d bytes, too long for a public key", ErrBadKey, len(line))
	}
	pub, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	switch {
	case err != nil:
		return nil, "", fmt.Errorf("%w: not an SSH public key (want one line like \"ssh-ed25519 AAAA... comment\")", ErrBadKey)
	case len(options) > 0:
		return nil, "", fmt.Errorf("%w: options before the key (%s) are not taken here", ErrBadKey, strings.Join(options, ","))
	case len(bytes.TrimSpace(rest)) > 0:
		return nil, "", fmt.Errorf("%w: one key at a time", ErrBadKey)
	}
	if err := checkKeyType(pub); err != nil {
		return nil, "", err
	}
	return pub, comment, nil
}

// checkKeyType refuses key types not fit for a login.
func checkKeyType(pub ssh.PublicKey) error {
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
		return nil
	case ssh.KeyAlgoRSA:
		if ck, ok := pub.(ssh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(interface{ Size() int }); ok && rk.Size()*8 < 2048 {
				return fmt.Errorf("%w: RSA key of %d bits, at least 2048 needed", ErrBadKey, rk.Size()*8)
			}
		}
		return nil
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return fmt.Errorf("%w: a certificate; register the plain public key", ErrBadKey)
	}
	return fmt.Errorf("%w: key type %s is not accepted (use ed25519, ecdsa or RSA)", ErrBadKey, pub.Type())
}

// ParseFrom reads a list of networks ("10.1.0.0/16", "192.0.2.7",
// "2001:db8::/48"), each a CIDR prefix or one address, and returns them as
// prefixes. A prefix with bits set past its length (10.1.2.3/16) is refused,
// as OpenSSH refuses it in from=: it is a typo or an interface address, and
// masking it would let the key in from a network far wider than meant.
func ParseFrom(list []string) ([]string, error) {
	if len(list) > maxFromLen {
		return nil, fmt.Errorf("%w: %d networks, at most %d", ErrBadKey, len(list), maxFromLen)
	}
	var out []string
	for _, v := range list {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("%w: network %q: want an address or a CIDR prefix such as 192.0.2.0/24", ErrBadKey, v)
			}
			a = a.Unmap()
			p = netip.PrefixFrom(a, a.BitLen())
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p))
		if !p.IsValid() {
			// A v4-mapped prefix shorter than /96 (::ffff:0:0/90) has no IPv4 form.
			return nil, fmt.Errorf("%w: network %q: want an address or a CIDR prefix such as 192.0.2.0/24", ErrBadKey, v)
		}
		if m := p.Masked(); m != p {
			return nil, fmt.Errorf("%w: network %q has host bits set past the /%d: did you mean %s, or the single address %s?",
				ErrBadKey, v, p.Bits(), m, p.Addr())
		}
		if !slices.Contains(out, p.String()) {
			out = append(out, p.String())
		}
	}
	return out, nil
}

// unmapBits is what a v4-mapped prefix (::ffff:10.0.0.0/104) loses when
// unmapped.
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return 96
	}
	return 0
}

// checkCommand refuses forced commands that cannot be meant.
func checkCommand(cmd string) error {
	if len(cmd) > maxCommandLen {
		return fmt.Errorf("%w: command of %d bytes, at most %d", ErrBadKey, len(cmd), maxCommandLen)
	}
	if cmd != "" && strings.TrimSpace(cmd) == "" {
		// No command means any command: a blank one must not become that.
		return fmt.Errorf("%w: the command is blank; give the one command the key may run, or none for any command", ErrBadKey)
	}
	for _, r := range cmd {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: the command holds a control character", ErrBadKey)
		}
	}
	return nil
}

// cleanLabel makes a label printable and short.
func cleanLabel(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) > maxLabelLen {
		s = strings.ToValidUTF8(s[:maxLabelLen], "")
	}
	return s
}

// buildKey checks nk under p at now and returns the key to store.
func buildKey(nk NewKey, p KeyPolicy, now time.Time, addedBy string) (store.Key, error) {
	pub, comment, err := ParsePublicKey(nk.PublicKey)
	if err != nil {
		return store.Key{}, err
	}
	from, err := ParseFrom(nk.From)
	if err != nil {
		return store.Key{}, err
	}
	if err := checkCommand(nk.Command); err != nil {
		return store.Key{}, err
	}
	label := nk.Label
	if label == "" {
		label = comment
	}
	k := store.Key{
		Fingerprint: ssh.FingerprintSHA256(pub),
		PublicKey:   strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))),
		Label:       cleanLabel(label),
		AddedAt:     now,
		AddedBy:     addedBy,
		Automation:  nk.Automation,
		From:        from,
		Expires:     nk.Expires,
		Command:     strings.TrimSpace(nk.Command),
	}
	if !k.Expires.IsZero() && !k.Expires.After(now) {
		return store.Key{}, fmt.Errorf("%w: expiry %s is in the past", ErrBadKey, formatTime(k.Expires))
	}
	if k.Automation {
		maxLife := p.AutomationMaxLifetime
		if maxLife <= 0 {
			maxLife = DefaultAutomationMaxLifetime
		}
		if len(k.From) == 0 {
			return store.Key{}, fmt.Errorf("%w: an automation key needs the networks it may log in from", ErrBadKey)
		}
		for _, f := range k.From {
			// A key that needs no code is for a lab's machines, not for
			// the internet: whoever plants one from a phished session
			// must not get a door open from everywhere.
			p, _ := netip.ParsePrefix(f)
			if min := minAutomationBits(p.Addr()); p.Bits() < min {
				return store.Key{}, fmt.Errorf("%w: an automation key's networks must be at most a /%d (IPv6: /%d) each, not %s",
					ErrBadKey, minAutomationBits4, minAutomationBits6, f)
			}
		}
		if k.Expires.IsZero() {
			k.Expires = now.Add(maxLife)
		}
		if k.Expires.After(now.Add(maxLife)) {
			return store.Key{}, fmt.Errorf("%w: an automation key lives at most %s (keys.automation_max_lifetime)", ErrBadKey, maxLife)
		}
	}
	return k, nil
}

// The widest network an automation key may name.
const (
	minAutomationBits4 = 16
	minAutomationBits6 = 48
)

// minAutomationBits is the shortest prefix an automation key may name for
// addresses like a.
func minAutomationBits(a netip.Addr) int {
	if a.Is4() {
		return minAutomationBits4
	}
	return minAutomationBits6
}

// AddKey registers a key for user. A user adding their own key (addedBy
// AddedBySelf: portal or SSH linking, signed in with both factors) must have
// a linked device; an admin may add one for anyone. The audit log gets
// key_added.
func (s *Service) AddKey(ctx context.Context, user string, nk NewKey, addedBy string) (store.Key, error) {
	if err := store.CheckName(user); err != nil {
		return store.Key{}, err
	}
	now := s.now()
	k, err := buildKey(nk, s.KeyPolicy, now, addedBy)
	if err != nil {
		return store.Key{}, err
	}
	err = s.Store.Update(user, func(u *store.User) error {
		if addedBy == AddedBySelf && u.State != store.StateActive {
			return notLinked(user, u.State)
		}
		if store.FindKey(u.Keys, k.Fingerprint) >= 0 {
			return fmt.Errorf("%w: %s", ErrKeyExists, k.Fingerprint)
		}
		if len(u.Keys) >= store.MaxKeys {
			return fmt.Errorf("%w: %d registered, at most %d", ErrTooManyKeys, len(u.Keys), store.MaxKeys)
		}
		u.Keys = append(slices.Clip(u.Keys), k)
		return nil
	})
	if err != nil {
		return store.Key{}, err
	}
	s.audit(ctx, store.Event{Kind: store.EventKeyAdded, User: user, Actor: ActorFrom(ctx), Detail: keyDetail(k)})
	s.log().InfoContext(ctx, "key added", "user", user, "fingerprint", k.Fingerprint, "automation", k.Automation, "by", addedBy)
	return k, nil
}

// keyDetail describes k for the audit log.
func keyDetail(k store.Key) string {
	d := k.Fingerprint
	if k.Label != "" {
		d += fmt.Sprintf(" %q", k.Label)
	}
	if k.Automation {
		d += ", automation"
	}
	if len(k.From) > 0 {
		d += ", from " + strings.Join(k.From, ",")
	}
	if !k.Expires.IsZero() {
		d += ", expires " + k.Expires.UTC().Format(time.RFC3339)
	}
	if k.Command != "" {
		d += fmt.Sprintf(", command %q", k.Command)
	}
	return d
}

// Keys returns user's registered keys, in the order they were added.
func (s *Service) Keys(ctx context.Context, user string) ([]store.Key, error) {
	if err := store.CheckName(user); err != nil {
		return nil, err
	}
	u, err := s.Store.Get(user)
	if err != nil {
		return nil, err
	}
	return u.Keys, nil
}

// RevokeKey removes user's key with fingerprint fp, forgets the devices
// remembered for it, and ends every live session that logged in with it
// (Service.EndKeySessions). It returns the key and how many sessions were
// ended. The audit log gets key_revoked.
func (s *Service) RevokeKey(ctx context.Context, user, fp string) (store.Key, int, error) {
	if err := store.CheckName(user); err != nil {
		return store.Key{}, 0, err
	}
	fp = strings.TrimSpace(fp)
	var gone store.Key
	err := s.Store.Update(user, func(u *store.User) error {
		i := store.FindKey(u.Keys, fp)
		if i < 0 {
			return fmt.Errorf("%w: %s has no key %s", ErrNoKey, user, fp)
		}
		gone = u.Keys[i]
		u.Keys = slices.Delete(slices.Clone(u.Keys), i, i+1)
		u.Remembered = slices.DeleteFunc(slices.Clone(u.Remembered), func(m store.Remembered) bool { return m.Fingerprint == fp })
		return nil
	})
	if err != nil {
		return store.Key{}, 0, err
	}
	ended := 0
	if s.EndKeySessions != nil {
		ended = s.EndKeySessions(user, fp)
	}
	s.audit(ctx, store.Event{Kind: store.EventKeyRevoked, User: user, Actor: ActorFrom(ctx),
		Detail: fmt.Sprintf("%s; %d live sessions ended", keyDetail(gone), ended)})
	s.log().InfoContext(ctx, "key revoked", "user", user, "fingerprint", fp, "sessions_ended", ended)
	return gone, ended, nil
}

// KeyErrorText is the text of a key operation's error whose message is fit
// for users (ErrBadKey, ErrKeyExists, ...), without the "bad key: " that
// every bad key's message begins with, ending in a full stop.
func KeyErrorText(err error) string {
	s := strings.TrimPrefix(err.Error(), ErrBadKey.Error()+": ")
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// ForgetRemembered drops every remembered device of u (a reset or a
// replaced phone).
func ForgetRemembered(u *store.User) { u.Remembered = nil }

// ImportedKey is one key line of an authorized_keys file, read by
// ParseAuthorizedKeys: the key to add, or why it cannot be.
type ImportedKey struct {
	Line int
	Key  NewKey
	// Dropped lists the line's options that are not carried over (only
	// from=, command= and expiry-time= are).
	Dropped []string
	Err     error
}

// ParseAuthorizedKeys reads an authorized_keys file: every key line, with
// its from= (addresses and CIDR prefixes only), command= and expiry-time=
// options. Blank and comment lines are skipped; a key line longer than
// maxKeyLineLen is an entry with its error (no key line is that long).
func ParseAuthorizedKeys(data []byte) ([]ImportedKey, error) {
	if len(data) > MaxKeyFileSize {
		return nil, fmt.Errorf("%w: file of %d bytes, at most %d", ErrBadKey, len(data), MaxKeyFileSize)
	}
	var out []ImportedKey
	for n := 1; len(data) > 0; n++ {
		raw := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			raw, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if t := bytes.TrimLeft(raw, " \t\r\v\f"); len(t) == 0 || t[0] == '#' {
			continue
		}
		if len(raw) > maxKeyLineLen {
			// sshd reads such a line; its key cannot be one to register (ParsePublicKey
			// refuses 16 KiB). Not copied: the file is bounded, the line is not.
			out = append(out, ImportedKey{Line: n, Err: fmt.Errorf("%w: a line of %d bytes, at most %d are read", ErrBadKey, len(raw), maxKeyLineLen)})
			continue
		}
		if line := strings.TrimSpace(string(raw)); line != "" {
			out = append(out, parseKeyLine(n, line))
		}
	}
	return out, nil
}

// The options of an authorized_keys line as OpenSSH's sshd (9.x, auth-options.c) reads them,
// names in any case. sshd refuses the whole line over any other option, a flag with a value, a
// value not in double quotes, or a second command=, from= or principals=.
var (
	// keyOptionFlags take no value; those of keyOptionNegatable may also have "no-" in front.
	keyOptionFlags     = []string{"restrict", "cert-authority"}
	keyOptionNegatable = []string{"port-forwarding", "agent-forwarding", "x11-forwarding", "touch-required", "verify-required", "pty", "user-rc"}
	// keyOptionValued take a value in double quotes.
	keyOptionValued = []string{"command", "principals", "from", "expiry-time", "environment", "permitopen", "permitlisten", "tunnel"}
	// keyOptionOnce may be given once.
	keyOptionOnce = []string{"command", "principals", "from"}
	// keyOptionRestricting close what a key may do besides running its command, which the
	// gatekeeper's certificate for a key with a forced command closes anyway (no
	// forwarding, pty or ~/.ssh/rc at all) and nothing closes for a key without one.
	keyOptionRestricting = []string{"restrict", "no-port-forwarding", "no-agent-forwarding", "no-x11-forwarding", "no-pty",
		"no-user-rc", "permitopen", "permitlisten", "tunnel", "principals"}
)

// isKeyFlag reports whether name (in lower case) is an option without a value.
func isKeyFlag(name string) bool {
	if slices.Contains(keyOptionFlags, name) || slices.Contains(keyOptionNegatable, name) {
		return true
	}
	neg, ok := strings.CutPrefix(name, "no-")
	return ok && slices.Contains(keyOptionNegatable, neg)
}

// parseKeyLine reads one authorized_keys line numbered n.
func parseKeyLine(n int, line string) ImportedKey {
	ik := ImportedKey{Line: n}
	pub, comment, options, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		ik.Err = fmt.Errorf("%w: not an authorized_keys key line", ErrBadKey)
		return ik
	}
	if err := checkKeyType(pub); err != nil {
		ik.Err = err
		return ik
	}
	ik.Key = NewKey{PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), Label: comment}
	fail := func(format string, a ...any) ImportedKey {
		ik.Err = fmt.Errorf("%w: "+format, append([]any{ErrBadKey}, a...)...)
		return ik
	}
	var restricting []string
	seen := map[string]bool{}
	for _, opt := range options {
		rawName, rawValue, hasValue := strings.Cut(opt, "=")
		name := strings.ToLower(rawName)
		var value string
		switch {
		case isKeyFlag(name):
			if hasValue {
				return fail("option %q takes no value: sshd refuses the whole line", opt)
			}
		case slices.Contains(keyOptionValued, name):
			if !hasValue {
				return fail("option %q needs a value: sshd refuses the whole line", opt)
			}
			v, ok := dequoteOption(rawValue)
			if !ok {
				return fail("option %q: the value must be in double quotes: sshd refuses the whole line", opt)
			}
			if seen[name] && slices.Contains(keyOptionOnce, name) {
				return fail("%s= given twice: sshd refuses the whole line", name)
			}
			value = v
		default:
			return fail("unknown option %q: sshd refuses the whole line (a misspelling?)", opt)
		}
		seen[name] = true
		switch name {
		case "from":
			from, err := fromPatterns(value)
			if err != nil {
				ik.Err = err
				return ik
			}
			ik.Key.From = from
		case "command":
			if strings.TrimSpace(value) == "" {
				// sshd runs the empty command, which does nothing; the key without
				// a command could run anything.
				return fail("%s runs nothing (the key can run no command at all), which the gatekeeper cannot keep; without it the key would run any command",
					opt)
			}
			ik.Key.Command = value
		case "expiry-time":
			t, err := parseExpiryTime(value)
			if err != nil {
				return fail("expiry-time %q: want YYYYMMDD[HHMM[SS]][Z]", value)
			}
			// sshd keeps the earliest of several.
			if ik.Key.Expires.IsZero() || t.Before(ik.Key.Expires) {
				ik.Key.Expires = t
			}
		case "cert-authority":
			return fail("a cert-authority line names a CA, not a key to log in with")
		case "verify-required":
			if pub.Type() == ssh.KeyAlgoSKED25519 || pub.Type() == ssh.KeyAlgoSKECDSA256 {
				// The key's PIN (user verification): the gatekeeper checks the
				// touch only, and a command= does not make up for that.
				return fail("%s is not enforced by the gatekeeper, which checks the FIDO key's touch but not its PIN; register the key by hand (without it) only if touch alone is acceptable",
					opt)
			}
			// sshd ignores it on any other key.
			ik.Dropped = append(ik.Dropped, opt)
		default:
			if slices.Contains(keyOptionRestricting, name) {
				restricting = append(restricting, opt)
			}
			ik.Dropped = append(ik.Dropped, opt)
		}
	}
	// A key with a forced command logs in with no forwarding, pty or
	// ~/.ssh/rc at all (see gatekeeper's certificates), so restrictions
	// beside command= are kept by being stricter. Without one, dropping them
	// would open what the user's authorized_keys had closed.
	if len(restricting) > 0 && ik.Key.Command == "" {
		ik.Err = fmt.Errorf("%w: %s cannot be kept without command=; register the key by hand if it may do everything",
			ErrBadKey, strings.Join(restricting, ","))
	}
	return ik
}

// dequoteOption reads an option's value as sshd does: in double quotes, with \" for a quote
// inside, and nothing after the closing quote.
func dequoteOption(v string) (string, bool) {
	if !strings.HasPrefix(v, `"`) {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		switch {
		case v[i] == '\\' && i+1 < len(v) && v[i+1] == '"':
			b.WriteByte('"')
			i++
		case v[i] == '"':
			return b.String(), i == len(v)-1
		default:
			b.WriteByte(v[i])
		}
	}
	return "", false // no closing quote
}

// fromPatterns reads a from= pattern list, which the gatekeeper takes only
// as addresses and CIDR prefixes: host name patterns, wildcards and negations
// cannot be checked the same way, so a key with them is not imported.
func fromPatterns(v string) ([]string, error) {
	var list []string
	for _, p := range strings.Split(v, ",") {
		// sshd matches each entry as written: one with blanks around it or an empty one
		// matches no client (sshd refuses the key), and a v4-mapped address never matches an
		// IPv4 client, which sshd sees unmapped. Read leniently, each would open the key to
		// a network sshd keeps it from.
		switch a, err := netip.ParseAddr(strings.Split(p, "/")[0]); {
		case p == "" || strings.TrimSpace(p) != p:
			return nil, fmt.Errorf("%w: from=%q: an empty entry or blanks around one, which sshd matches with no client", ErrBadKey, v)
		case err == nil && a.Is4In6():
			return nil, fmt.Errorf("%w: from=%q: %s is a v4-mapped address, which sshd matches with no IPv4 client (write %s)",
				ErrBadKey, v, p, a.Unmap())
		case strings.ContainsAny(p, "*?!"):
			return nil, fmt.Errorf("%w: from=%q: only addresses and CIDR prefixes are taken, not patterns", ErrBadKey, v)
		}
		list = append(list, p)
	}
	from, err := ParseFrom(list)
	if err != nil {
		return nil, fmt.Errorf("from=%q: %w", v, err) // ParseFrom's error says which network and why
	}
	if len(from) == 0 {
		// OpenSSH lets such a key in from nowhere; without networks it would be let in from
		// anywhere.
		return nil, fmt.Errorf("%w: from=%q names no network", ErrBadKey, v)
	}
	return from, nil
}

// parseExpiryTime reads OpenSSH's expiry-time: YYYYMMDD[HHMM[SS]], local
// time unless it ends in Z.
func parseExpiryTime(v string) (time.Time, error) {
	loc := time.Local
	if s, ok := strings.CutSuffix(v, "Z"); ok {
		v, loc = s, time.UTC
	}
	for _, layout := range []string{"20060102150405", "200601021504", "20060102"} {
		if len(v) == len(layout) {
			return time.ParseInLocation(layout, v, loc)
		}
	}
	return time.Time{}, fmt.Errorf("bad expiry-time %q", v)
}

// ImportResult is what ImportKeys did with each key line.
type ImportResult struct {
	Added   []store.Key
	Skipped []ImportedKey // Err says why: a bad line, or the key is registered already
}

// ImportKeys registers the keys of an authorized_keys file for user, as an
// admin (actor) would add each with AddKey; keys the user has already and
// keys that cannot be taken are skipped, each with its reason. A key whose
// expiry-time has passed is skipped too.
func (s *Service) ImportKeys(ctx context.Context, user string, data []byte, actor string) (ImportResult, error) {
	var res ImportResult
	if err := store.CheckName(user); err != nil {
		return res, err
	}
	lines, err := ParseAuthorizedKeys(data)
	if err != nil {
		return res, err
	}
	for _, ik := range lines {
		if ik.Err != nil {
			res.Skipped = append(res.Skipped, ik)
			continue
		}
		k, err := s.AddKey(ctx, user, ik.Key, actor)
		if err != nil {
			if !errors.Is(err, ErrBadKey) && !errors.Is(err, ErrKeyExists) && !errors.Is(err, ErrTooManyKeys) {
				return res, err
			}
			ik.Err = err
			res.Skipped = append(res.Skipped, ik)
			continue
		}
		res.Added = append(res.Added, k)
	}
	return res, nil
}
