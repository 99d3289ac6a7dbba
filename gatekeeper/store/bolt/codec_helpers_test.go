package bolt

import (
	"encoding/json"
	"testing"

	"gatekeeper/gatekeeper/store"
)

// These let the tests written before the codec moved to package store keep
// reading and forging stored values as they did.

// authenticated is the stored form store.Codec.Authenticate writes.
type authenticated struct {
	Data json.RawMessage `json:"data"`
	MAC  []byte          `json:"mac"`
}

const (
	keySize     = store.KeySize
	maxTokenLen = 256 // as store.TicketKey allows
)

type (
	record = store.Record
	ticket = store.Ticket
)

var (
	checkPlain   = []byte(store.CheckPlain)
	checkPlainV1 = []byte(store.CheckPlainV1)
	// checkAD is the additional data store seals the key check with.
	checkAD = []byte("gatekeeper keycheck")
)

func userAD(name string) []byte     { return store.UserAD(name) }
func ticketKey(token string) []byte { return store.TicketKey(token) }

// sealer is a codec for building stored values by hand.
type sealer struct{ c *store.Codec }

func (x sealer) seal(plain, ad []byte) ([]byte, error)  { return x.c.Seal(plain, ad) }
func (x sealer) open(sealed, ad []byte) ([]byte, error) { return x.c.Open(sealed, ad) }
func (x sealer) authenticate(bucket, key []byte, v any) ([]byte, error) {
	return x.c.Authenticate(string(bucket), key, v)
}

// v1Sealer is a codec under key, as both schemas seal secrets alike.
func v1Sealer(t *testing.T, key []byte) sealer {
	t.Helper()
	c, err := store.NewCodec(key, "test key")
	if err != nil {
		t.Fatal(err)
	}
	return sealer{c}
}

func (s *Store) verify(bucket, key, raw []byte, v any) error {
	return s.codec.Verify(string(bucket), key, raw, v)
}

func (s *Store) authenticate(bucket, key []byte, v any) ([]byte, error) {
	return s.codec.Authenticate(string(bucket), key, v)
}
