package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// macInfo is the HKDF info that derives the record MAC key from the key
// file. It names the one use of the derived key, so that it is independent of
// the AES-256-GCM key (the key file itself) that seals secrets.
const macInfo = "gatekeeper record mac, schema 2"

// errIntegrity is what verify returns for a value that is not in the
// authenticated form or whose MAC does not match.
var errIntegrity = errors.New("fails its integrity check")

// setKey derives everything the store does with the key file's 32 bytes: the
// AEAD that seals TOTP secrets (the key itself, as in schema 1, so that sealed
// secrets stay valid) and the HMAC key that authenticates records.
func (s *Store) setKey(key []byte) error {
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("secret key %s: %w", s.keyPath, err)
	}
	if s.aead, err = cipher.NewGCM(block); err != nil {
		return fmt.Errorf("secret key %s: %w", s.keyPath, err)
	}
	if s.macKey, err = hkdf.Key(sha256.New, key, nil, macInfo, sha256.Size); err != nil {
		return fmt.Errorf("secret key %s: derive the record key: %w", s.keyPath, err)
	}
	return nil
}

// mac is the HMAC-SHA256 of data stored under key in bucket. The bucket and
// key go in length-prefixed, so that no two (bucket, key, data) triples read
// alike: a value authenticated for one user or ticket fails under another.
func (s *Store) mac(bucket, key, data []byte) []byte {
	m := hmac.New(sha256.New, s.macKey)
	for _, part := range [][]byte{bucket, key} {
		m.Write(binary.BigEndian.AppendUint32(nil, uint32(len(part))))
		m.Write(part)
	}
	m.Write(data)
	return m.Sum(nil)
}

// authenticate encodes v as JSON and returns the value to store under key in
// bucket:
//
//	{"data":<v as JSON>,"mac":"<base64 of the MAC of those bytes>"}
//
// It is written out by hand rather than with json.Marshal so that the data
// bytes stored are the very bytes the MAC covers.
func (s *Store) authenticate(bucket, key []byte, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	mac := base64.StdEncoding.EncodeToString(s.mac(bucket, key, data))
	var out bytes.Buffer
	out.Grow(len(data) + len(mac) + 20)
	out.WriteString(`{"data":`)
	out.Write(data)
	out.WriteString(`,"mac":"`)
	out.WriteString(mac)
	out.WriteString(`"}`)
	return out.Bytes(), nil
}

// authenticated is the stored form that authenticate writes. Unmarshal gives
// Data the exact bytes between the braces of the stored value, which is what
// the MAC is checked over.
type authenticated struct {
	Data json.RawMessage `json:"data"`
	MAC  []byte          `json:"mac"`
}

// verify checks that raw, stored under key in bucket, was written by
// authenticate with this key file for this bucket and key, and decodes its
// data into v. It returns errIntegrity when it was not (edited, forged, moved
// from another key, or not in the authenticated form at all), and a JSON error
// only for authentic data that does not fit v.
func (s *Store) verify(bucket, key, raw []byte, v any) error {
	var a authenticated
	if err := json.Unmarshal(raw, &a); err != nil || len(a.Data) == 0 {
		return errIntegrity
	}
	if !hmac.Equal(a.MAC, s.mac(bucket, key, a.Data)) {
		return errIntegrity
	}
	return json.Unmarshal(a.Data, v)
}

// peekAuthenticated decodes the data of an authenticated value into v without
// checking it, for Open's look at the database before the key is loaded.
func peekAuthenticated(raw []byte, v any) error {
	var a authenticated
	if err := json.Unmarshal(raw, &a); err != nil {
		return err
	}
	return json.Unmarshal(a.Data, v)
}
