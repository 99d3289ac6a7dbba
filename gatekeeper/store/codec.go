package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The buckets (bbolt bucket names, etcd key prefixes) whose values Codec
// authenticates. The name is part of each value's MAC.
const (
	BucketUsers   = "users"
	BucketTickets = "tickets"
)

// macInfo is the HKDF info that derives the record MAC key from the key
// file. It names the one use of the derived key, so that it is independent of
// the AES-256-GCM key (the key file itself) that seals secrets.
const macInfo = "gatekeeper record mac, schema 2"

// KeySize is the secret key file's size: an AES-256 key.
const KeySize = 32

// The key check: a known text sealed with the key and stored beside the
// records, so that a wrong key file is caught when the store is opened, not
// at the first login. It names the schema version, so that a schema record
// set back by hand is caught too; CheckPlainV1 is what schema 1 sealed.
const (
	CheckPlain   = "gatekeeper secret key check v2"
	CheckPlainV1 = "gatekeeper secret key check v1"
	checkAD      = "gatekeeper keycheck"
)

// errIntegrity is what Verify returns for a value that is not in the
// authenticated form or whose MAC does not match.
var errIntegrity = errors.New("fails its integrity check")

// Codec seals secrets and authenticates stored values under the key file, and
// turns user records and tickets into their stored form and back. Every
// backend uses it, so stored values are the same bytes whatever holds them.
// It is safe for concurrent use.
type Codec struct {
	aead   cipher.AEAD // seals TOTP secrets
	macKey []byte      // authenticates records and tickets
	// Where names the storage in error messages ("database /var/lib/...",
	// "etcd cluster /gatekeeper/").
	Where string
}

// NewCodec derives everything a store does with the key file's 32 bytes: the
// AEAD that seals TOTP secrets (the key itself, as in schema 1, so that sealed
// secrets stay valid) and the HMAC key that authenticates records.
func NewCodec(key []byte, where string) (*Codec, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	macKey, err := hkdf.Key(sha256.New, key, nil, macInfo, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("derive the record key: %w", err)
	}
	return &Codec{aead: aead, macKey: macKey, Where: where}, nil
}

// Seal encrypts plain with a fresh random nonce: nonce || ciphertext+tag.
func (c *Codec) Seal(plain, ad []byte) ([]byte, error) {
	ns := c.aead.NonceSize()
	out := make([]byte, ns, ns+len(plain)+c.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return c.aead.Seal(out, out[:ns], plain, ad), nil
}

// Open reverses Seal.
func (c *Codec) Open(sealed, ad []byte) ([]byte, error) {
	ns := c.aead.NonceSize()
	if len(sealed) < ns+c.aead.Overhead() {
		return nil, errors.New("sealed value too short")
	}
	return c.aead.Open(nil, sealed[:ns], sealed[ns:], ad)
}

// KeyCheck returns a new sealed key check (CheckPlain) to store.
func (c *Codec) KeyCheck() ([]byte, error) { return c.Seal([]byte(CheckPlain), []byte(checkAD)) }

// OpenKeyCheck opens a stored key check; an error means the key file is not
// the one it was sealed with.
func (c *Codec) OpenKeyCheck(sealed []byte) ([]byte, error) { return c.Open(sealed, []byte(checkAD)) }

// UserAD is the additional data a user's secret is sealed with.
func UserAD(name string) []byte { return []byte("user:" + name) }

// NextAD is the additional data a user's replacement secret is sealed with:
// not UserAD, so that the two sealed secrets of one record cannot be swapped
// for each other.
func NextAD(name string) []byte { return []byte("next:" + name) }

// mac is the HMAC-SHA256 of data stored under key in bucket. The bucket and
// key go in length-prefixed, so that no two (bucket, key, data) triples read
// alike: a value authenticated for one user or ticket fails under another.
func (c *Codec) mac(bucket string, key, data []byte) []byte {
	m := hmac.New(sha256.New, c.macKey)
	for _, part := range [][]byte{[]byte(bucket), key} {
		m.Write(binary.BigEndian.AppendUint32(nil, uint32(len(part))))
		m.Write(part)
	}
	m.Write(data)
	return m.Sum(nil)
}

// Authenticate encodes v as JSON and returns the value to store under key in
// bucket:
//
//	{"data":<v as JSON>,"mac":"<base64 of the MAC of those bytes>"}
//
// It is written out by hand rather than with json.Marshal so that the data
// bytes stored are the very bytes the MAC covers.
func (c *Codec) Authenticate(bucket string, key []byte, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	mac := base64.StdEncoding.EncodeToString(c.mac(bucket, key, data))
	var out bytes.Buffer
	out.Grow(len(data) + len(mac) + 20)
	out.WriteString(`{"data":`)
	out.Write(data)
	out.WriteString(`,"mac":"`)
	out.WriteString(mac)
	out.WriteString(`"}`)
	return out.Bytes(), nil
}

// authenticated is the stored form that Authenticate writes. Unmarshal gives
// Data the exact bytes between the braces of the stored value, which is what
// the MAC is checked over.
type authenticated struct {
	Data json.RawMessage `json:"data"`
	MAC  []byte          `json:"mac"`
}

// Verify checks that raw, stored under key in bucket, was written by
// Authenticate with this key file for this bucket and key, and decodes its
// data into v. It returns an error matching ErrIntegrity when it was not
// (edited, forged, moved from another key, or not in the authenticated form
// at all), and a JSON error only for authentic data that does not fit v.
func (c *Codec) Verify(bucket string, key, raw []byte, v any) error {
	var a authenticated
	if err := json.Unmarshal(raw, &a); err != nil || len(a.Data) == 0 {
		return errIntegrity
	}
	if !hmac.Equal(a.MAC, c.mac(bucket, key, a.Data)) {
		return errIntegrity
	}
	return json.Unmarshal(a.Data, v)
}

// IsIntegrity reports whether err is Verify's "fails its integrity check".
func IsIntegrity(err error) bool { return errors.Is(err, errIntegrity) }

// PeekAuthenticated decodes the data of an authenticated value into v without
// checking it, for a look at stored data before the key is loaded.
func PeekAuthenticated(raw []byte, v any) error {
	var a authenticated
	if err := json.Unmarshal(raw, &a); err != nil {
		return err
	}
	return json.Unmarshal(a.Data, v)
}

// Record is a user's stored form: JSON, authenticated (see Authenticate),
// keyed by name in BucketUsers. Schema 1 stored this JSON alone.
type Record struct {
	State State `json:"state"`
	// Sealed is nonce || AES-256-GCM(secret), with UserAD(name) as
	// additional data so a sealed secret copied to another user fails.
	Sealed         []byte    `json:"sealed_secret,omitempty"`
	LastStep       uint64    `json:"last_step,omitempty"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
	PendingSince   time.Time `json:"pending_since,omitzero"`
	EnrolledAt     time.Time `json:"enrolled_at,omitzero"`
	LastLogin      time.Time `json:"last_login,omitzero"`
	RecoverySalt   []byte    `json:"recovery_salt,omitempty"`
	Recovery       [][]byte  `json:"recovery,omitempty"`
	ConfirmTries   int       `json:"confirm_tries,omitempty"`
	PendingBinding []byte    `json:"pending_binding,omitempty"`
	// SealedNext is the replacement secret (User.NextSecret), sealed like Sealed but with
	// NextAD(name) as additional data, so that it cannot be swapped with the current secret.
	// These fields came after schema 2 first shipped; a record without them reads as "no
	// replacement, no drift", so no schema change was needed.
	SealedNext []byte    `json:"sealed_next_secret,omitempty"`
	NextSince  time.Time `json:"next_since,omitzero"`
	DriftSteps int       `json:"drift_steps,omitempty"`
	DriftAt    time.Time `json:"drift_at,omitzero"`
	// Keys and Remembered came later still, the same way: a record without
	// them has none. A record of state none is kept while it holds keys.
	Keys       []Key        `json:"keys,omitempty"`
	Remembered []Remembered `json:"remembered,omitempty"`
}

// Decode checks and parses a stored record of name; raw nil means no record
// (StateNone). A record that fails its integrity check or holds impossible
// values is an error matching ErrDamaged that names the user.
func (c *Codec) Decode(name string, raw []byte) (Record, error) {
	if raw == nil {
		return Record{State: StateNone}, nil
	}
	var r Record
	err := c.Verify(BucketUsers, []byte(name), raw, &r)
	if errors.Is(err, errIntegrity) {
		return Record{}, Damaged(fmt.Errorf("user %q: stored record in %s fails its integrity check "+
			"(damaged, edited, or copied from another user; deleting it resets the user)", name, c.Where))
	}
	if err == nil {
		err = r.check()
	}
	if err != nil {
		return Record{}, Damaged(fmt.Errorf("user %q: stored record in %s is damaged: %w", name, c.Where, err))
	}
	return r, nil
}

// check catches impossible values in an authentic record: they come from a
// gatekeeper bug, not an attacker.
func (r Record) check() error {
	switch {
	case r.State != StateNone && r.State != StatePending && r.State != StateActive:
		return fmt.Errorf("unknown state %q", r.State)
	case r.State != StateNone && len(r.Sealed) == 0:
		return fmt.Errorf("state %s without a secret", r.State)
	case len(r.SealedNext) > 0 && r.State != StateActive:
		return fmt.Errorf("state %s with a replacement secret", r.State)
	}
	return nil
}

// DecodeUser is Decode as a User, without secrets.
func (c *Codec) DecodeUser(name string, raw []byte) (User, error) {
	r, err := c.Decode(name, raw)
	if err != nil {
		return User{Name: name}, err
	}
	return r.User(name), nil
}

// User is r as a User (without the secrets).
func (r Record) User(name string) User {
	return User{
		Name:           name,
		State:          r.State,
		LastStep:       r.LastStep,
		CreatedAt:      r.CreatedAt,
		PendingSince:   r.PendingSince,
		EnrolledAt:     r.EnrolledAt,
		LastLogin:      r.LastLogin,
		RecoverySalt:   r.RecoverySalt,
		Recovery:       r.Recovery,
		ConfirmTries:   r.ConfirmTries,
		PendingBinding: r.PendingBinding,
		NextSince:      r.NextSince,
		DriftSteps:     r.DriftSteps,
		DriftAt:        r.DriftAt,
		Keys:           r.Keys,
		Remembered:     r.Remembered,
	}
}

// Apply is the heart of every backend's Update: given the stored value of
// name's record (nil: none), it calls fn with the record and its secrets
// opened and returns the value to store instead, or del true when the record
// is to be deleted (StateNone without a secret). It writes nothing itself.
//
// The result must keep the name, must not lower LastStep, a pending or
// active record must have a secret, only an active one may hold a
// replacement secret, and recovery code hashes need a salt and
// RecoveryHashSize bytes each; otherwise Apply returns an error. fn's error
// is returned unchanged. A stored record that fails its check is an error
// matching ErrDamaged and fn is not called. A panic in fn propagates.
func (c *Codec) Apply(name string, raw []byte, fn func(u *User) error) (out []byte, del bool, err error) {
	old, err := c.Decode(name, raw)
	if err != nil {
		return nil, false, err
	}
	u := old.User(name)
	var oldPlain []byte
	if len(old.Sealed) > 0 {
		if oldPlain, err = c.Open(old.Sealed, UserAD(name)); err != nil {
			return nil, false, Damaged(fmt.Errorf("user %q: stored secret cannot be decrypted (record damaged or copied from another user): %w", name, err))
		}
		u.Secret = bytes.Clone(oldPlain)
	}
	var oldNext []byte
	if len(old.SealedNext) > 0 {
		if oldNext, err = c.Open(old.SealedNext, NextAD(name)); err != nil {
			return nil, false, Damaged(fmt.Errorf("user %q: stored replacement secret cannot be decrypted (record damaged or copied from another user): %w", name, err))
		}
		u.NextSecret = bytes.Clone(oldNext)
	}

	if err := fn(&u); err != nil {
		return nil, false, err
	}

	switch {
	case u.Name != name:
		return nil, false, fmt.Errorf("user %q: update may not rename the user (to %q)", name, u.Name)
	case u.State != StateNone && u.State != StatePending && u.State != StateActive:
		return nil, false, fmt.Errorf("user %q: unknown state %q", name, u.State)
	case len(u.NextSecret) > 0 && u.State != StateActive:
		// Checked before the delete below: a reset must drop the replacement knowingly.
		return nil, false, fmt.Errorf("user %q: a replacement secret needs an active device (state %s)", name, u.State)
	case u.State == StateNone && len(u.Secret) == 0 && len(u.Keys) == 0:
		return nil, true, nil
	case u.State != StateNone && len(u.Secret) == 0:
		return nil, false, fmt.Errorf("user %q: state %s needs a secret", name, u.State)
	case u.LastStep < old.LastStep:
		return nil, false, fmt.Errorf("user %q: last used time step may not go back (%d to %d)", name, old.LastStep, u.LastStep)
	case len(u.Recovery) > 0 && len(u.RecoverySalt) == 0:
		return nil, false, fmt.Errorf("user %q: recovery code hashes without a salt", name)
	}
	for i, h := range u.Recovery {
		if len(h) != RecoveryHashSize {
			return nil, false, fmt.Errorf("user %q: recovery code hash %d has %d bytes, want %d", name, i, len(h), RecoveryHashSize)
		}
	}
	if err := checkKeys(name, u.Keys, u.Remembered); err != nil {
		return nil, false, err
	}
	r := Record{
		State:          u.State,
		LastStep:       u.LastStep,
		CreatedAt:      utc(u.CreatedAt),
		PendingSince:   utc(u.PendingSince),
		EnrolledAt:     utc(u.EnrolledAt),
		LastLogin:      utc(u.LastLogin),
		RecoverySalt:   u.RecoverySalt,
		Recovery:       u.Recovery,
		ConfirmTries:   u.ConfirmTries,
		PendingBinding: u.PendingBinding,
		NextSince:      utc(u.NextSince),
		DriftSteps:     u.DriftSteps,
		DriftAt:        utc(u.DriftAt),
		Keys:           u.Keys,
		Remembered:     u.Remembered,
	}
	for i := range r.Keys {
		k := &r.Keys[i]
		k.AddedAt, k.LastUsed, k.Expires = utc(k.AddedAt), utc(k.LastUsed), utc(k.Expires)
	}
	for i := range r.Remembered {
		m := &r.Remembered[i]
		m.Since, m.Until = utc(m.Since), utc(m.Until)
	}
	switch {
	case len(u.Secret) == 0 && u.State == StateNone:
		// Kept for its keys: nothing to seal.
	case oldPlain != nil && bytes.Equal(u.Secret, oldPlain):
		r.Sealed = old.Sealed // unchanged: spend no fresh nonce
	default:
		if r.Sealed, err = c.Seal(u.Secret, UserAD(name)); err != nil {
			return nil, false, err
		}
	}
	switch {
	case len(u.NextSecret) == 0:
	case oldNext != nil && bytes.Equal(u.NextSecret, oldNext):
		r.SealedNext = old.SealedNext
	default:
		if r.SealedNext, err = c.Seal(u.NextSecret, NextAD(name)); err != nil {
			return nil, false, err
		}
	}
	v, err := c.Authenticate(BucketUsers, []byte(name), r)
	if err != nil {
		return nil, false, fmt.Errorf("user %q: encode record: %w", name, err)
	}
	return v, false, nil
}

// utc drops the monotonic reading and location so records compare and read
// the same everywhere; the zero time stays zero (and is left out).
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// checkKeys refuses keys and remembered devices a record must not hold: too
// many, a key without a fingerprint or public key, one key twice, an
// automation key without networks or expiry.
func checkKeys(name string, keys []Key, remembered []Remembered) error {
	if len(keys) > MaxKeys {
		return fmt.Errorf("user %q: %d keys, at most %d allowed", name, len(keys), MaxKeys)
	}
	if len(remembered) > MaxRemembered {
		return fmt.Errorf("user %q: %d remembered devices, at most %d allowed", name, len(remembered), MaxRemembered)
	}
	seen := map[string]bool{}
	for _, k := range keys {
		switch {
		case k.Fingerprint == "" || k.PublicKey == "":
			return fmt.Errorf("user %q: a key without fingerprint or public key", name)
		case seen[k.Fingerprint]:
			return fmt.Errorf("user %q: key %s registered twice", name, k.Fingerprint)
		case k.Automation && (len(k.From) == 0 || k.Expires.IsZero()):
			return fmt.Errorf("user %q: automation key %s needs networks and an expiry", name, k.Fingerprint)
		}
		seen[k.Fingerprint] = true
	}
	return nil
}
