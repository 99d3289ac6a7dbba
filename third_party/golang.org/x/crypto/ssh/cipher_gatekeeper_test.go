// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 1: tests of the
// chacha20-poly1305@openssh.com fast path.

package ssh

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/binary"
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

// TestDataDecryptedInPooledBuffer: with AES-GCM and chacha20-poly1305 a
// large channel data packet comes out of readPacket in the pooled array the
// cipher decrypted it in, not in a copy, and the cipher takes another array
// for its next one; a large packet that is not channel data, data just
// under the pooled size and data too large for an array come out in
// buffers of their own, and the cipher keeps no array. Every packet read
// stays intact while the later ones are read. GATEKEEPER PATCH 10.
func TestDataDecryptedInPooledBuffer(t *testing.T) {
	data := func(n int) []byte {
		p := make([]byte, n)
		rand.Read(p)
		p[0] = msgChannelData
		binary.BigEndian.PutUint32(p[5:], uint32(n-9))
		return p
	}
	ignore := func(n int) []byte {
		p := make([]byte, n)
		rand.Read(p)
		p[0] = msgIgnore
		return p
	}
	packets := []struct {
		packet   []byte
		handOver bool // the packet is the cipher's array, handed over
	}{
		{data(32768 + 9), true},
		{data(pooledPacketMin + 100), true},
		{ignore(30000), false},
		{data(pooledPacketMin - 1), false}, // read into an array (its padding counts), not pooled
		{data(pooledPacketSize), false},    // with its tag, too large for an array
		{data(2000), false},
		{data(32768 + 9), true},
	}
	for _, name := range []string{CipherAES128GCM, CipherChaCha20Poly1305} {
		t.Run(name, func(t *testing.T) {
			algs := DirectionAlgorithms{Cipher: name, MAC: HMACSHA256, compression: compressionNone}
			var w, r connectionState
			var err error
			if w.packetCipher, err = newPacketCipher(clientKeys, algs, &kexResult{Hash: crypto.SHA256}); err != nil {
				t.Fatal(err)
			}
			if r.packetCipher, err = newPacketCipher(clientKeys, algs, &kexResult{Hash: crypto.SHA256}); err != nil {
				t.Fatal(err)
			}
			var rb *pooledReadBuf
			switch c := r.packetCipher.(type) {
			case *gcmCipher:
				rb = &c.pooledReadBuf
			case *chacha20Poly1305Cipher:
				rb = &c.pooledReadBuf
			default:
				t.Fatalf("cipher %T", c)
			}
			var wire bytes.Buffer
			bw := bufio.NewWriter(&wire)
			for _, p := range packets {
				if err := w.writePacket(bw, rand.Reader, bytes.Clone(p.packet), false); err != nil {
					t.Fatal(err)
				}
			}
			br := bufio.NewReader(&wire)
			var got [][]byte
			seen := map[*pooledPacket]bool{}
			for i, p := range packets {
				held := rb.arr
				packet, err := r.readPacket(br, false)
				if err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				got = append(got, packet)
				arr := pooledArray(packet)
				if p.handOver {
					if arr == nil || rb.arr != nil || &arr[packetHead] != &packet[0] {
						t.Fatalf("packet %d: not handed over in the cipher's array (pooled %v, cipher keeps one: %v)", i, arr != nil, rb.arr != nil)
					}
					if held != nil && arr != held {
						t.Fatalf("packet %d: handed over in another array than the cipher held", i)
					}
					if seen[arr] {
						t.Fatalf("packet %d: an array handed over twice", i)
					}
					seen[arr] = true
				} else if arr != nil && rb.arr != nil && arr == rb.arr {
					t.Fatalf("packet %d: the cipher kept the array it returned", i)
				}
				if rb.arr != nil {
					t.Fatalf("packet %d: the cipher holds an array after it", i)
				}
			}
			for i, p := range packets {
				if !bytes.Equal(got[i], p.packet) {
					t.Errorf("packet %d (%d bytes): changed after the later reads", i, len(p.packet))
				}
			}
		})
	}
}

// writeCounter counts the Write calls that reach it.
type writeCounter struct {
	bytes.Buffer
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestGCMWritesOnce: an AES-GCM packet goes out in one Write (through
// the transport's small bufio.Writer, a length written apart cost a system
// call and a TCP segment of its own per packet), and reads back.
// GATEKEEPER PATCH 11.
func TestGCMWritesOnce(t *testing.T) {
	algs := DirectionAlgorithms{Cipher: CipherAES128GCM, MAC: HMACSHA256, compression: compressionNone}
	for _, size := range []int{1, 100, 2000, 32768 + 9, 35000} {
		w, err := newPacketCipher(clientKeys, algs, &kexResult{Hash: crypto.SHA256})
		if err != nil {
			t.Fatal(err)
		}
		r, err := newPacketCipher(clientKeys, algs, &kexResult{Hash: crypto.SHA256})
		if err != nil {
			t.Fatal(err)
		}
		for seq := uint32(0); seq < 3; seq++ {
			payload := make([]byte, size)
			rand.Read(payload)
			var out writeCounter
			if err := w.writeCipherPacket(seq, &out, rand.Reader, payload); err != nil {
				t.Fatal(err)
			}
			if out.writes != 1 {
				t.Fatalf("size %d: %d writes, want 1", size, out.writes)
			}
			got, err := r.readCipherPacket(seq, &out.Buffer)
			if err != nil || !bytes.Equal(got, payload) || out.Len() != 0 {
				t.Fatalf("size %d seq %d: read back %d bytes (%v), %d left over", size, seq, len(got), err, out.Len())
			}
		}
	}
}
