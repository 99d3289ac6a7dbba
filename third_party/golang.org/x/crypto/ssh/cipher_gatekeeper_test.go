// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 1: tests of the
// chacha20-poly1305@openssh.com fast path.

package ssh

import (
	"bytes"
	"crypto/rand"
	"testing"
)

// TestChaCha20AEADKeystream checks that packets written with the keystream
// from chacha20poly1305's Seal are byte for byte those of chacha20's
// XORKeyStream, and that each reader decrypts the other's, for the sizes
// where block boundaries and the 16 spare bytes matter.
func TestChaCha20AEADKeystream(t *testing.T) {
	key := make([]byte, 64)
	rand.Read(key)
	newCipher := func(aead bool) *chacha20Poly1305Cipher {
		old := useAEADKeystream
		useAEADKeystream = aead
		defer func() { useAEADKeystream = old }()
		c, err := newChaCha20Cipher(key, nil, nil, DirectionAlgorithms{})
		if err != nil {
			t.Fatal(err)
		}
		return c.(*chacha20Poly1305Cipher)
	}
	if newCipher(true).content == nil && useAEADKeystream {
		t.Fatal("the AEAD keystream is not used on this architecture")
	}
	for _, size := range []int{1, 15, 16, 63, 64, 65, 1000, 32768, 35000} {
		payload := make([]byte, size)
		rand.Read(payload)
		for seq := uint32(0); seq < 3; seq++ {
			// Padding comes from rand: give both writers the same bytes.
			pad := make([]byte, 64)
			rand.Read(pad)
			var slow, fast bytes.Buffer
			if err := newCipher(false).writeCipherPacket(seq, &slow, bytes.NewReader(pad), payload); err != nil {
				t.Fatal(err)
			}
			if err := newCipher(true).writeCipherPacket(seq, &fast, bytes.NewReader(pad), payload); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(slow.Bytes(), fast.Bytes()) {
				t.Fatalf("size %d seq %d: the two keystreams differ", size, seq)
			}
			for _, aead := range []bool{false, true} {
				got, err := newCipher(aead).readCipherPacket(seq, bytes.NewReader(fast.Bytes()))
				if err != nil || !bytes.Equal(got, payload) {
					t.Fatalf("size %d seq %d aead %v: read back %d bytes, err %v", size, seq, aead, len(got), err)
				}
			}
			// A flipped bit is still refused.
			bad := bytes.Clone(fast.Bytes())
			bad[len(bad)/2] ^= 1
			if _, err := newCipher(true).readCipherPacket(seq, bytes.NewReader(bad)); err == nil {
				t.Fatalf("size %d: a corrupted packet was accepted", size)
			}
		}
	}
}

// BenchmarkChaCha20Packet measures writing and reading one 32 KiB packet,
// the relay's bulk unit, with and without the AEAD keystream.
func BenchmarkChaCha20Packet(b *testing.B) {
	for _, aead := range []bool{false, true} {
		name := "XORKeyStream"
		if aead {
			name = "AEADSeal"
		}
		b.Run(name, func(b *testing.B) {
			old := useAEADKeystream
			useAEADKeystream = aead
			defer func() { useAEADKeystream = old }()
			key := make([]byte, 64)
			w, _ := newChaCha20Cipher(key, nil, nil, DirectionAlgorithms{})
			r, _ := newChaCha20Cipher(key, nil, nil, DirectionAlgorithms{})
			payload := make([]byte, 32768)
			var buf bytes.Buffer
			b.SetBytes(int64(len(payload)))
			for i := 0; b.Loop(); i++ {
				buf.Reset()
				if err := w.writeCipherPacket(uint32(i), &buf, rand.Reader, payload); err != nil {
					b.Fatal(err)
				}
				if _, err := r.readCipherPacket(uint32(i), &buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
