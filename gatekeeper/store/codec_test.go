package store

import (
	"bytes"
	"testing"
)

func mustCodec(t *testing.T, key []byte) *Codec {
	t.Helper()
	c, err := NewCodec(key, "test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestMACKeyIndependent: the record MAC key is derived from, and differs
// from, the sealing key, and two key files give two MAC keys.
func TestMACKeyIndependent(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, KeySize), bytes.Repeat([]byte{2}, KeySize)
	s1, s2 := mustCodec(t, k1), mustCodec(t, k2)
	again := mustCodec(t, k1)
	if bytes.Equal(s1.macKey, k1) || bytes.Equal(s1.macKey, s2.macKey) || !bytes.Equal(s1.macKey, again.macKey) {
		t.Error("MAC key not a deterministic function of the key file distinct from it")
	}
	// The bucket, the key and the data are told apart.
	macs := map[string]bool{}
	for _, in := range [][3]string{{"users", "alice", "{}"}, {"users", "alic", "e{}"}, {"user", "salice", "{}"}, {"tickets", "alice", "{}"}} {
		macs[string(s1.mac(in[0], []byte(in[1]), []byte(in[2])))] = true
	}
	if len(macs) != 4 {
		t.Error("different (bucket, key, data) triples share a MAC")
	}
}
