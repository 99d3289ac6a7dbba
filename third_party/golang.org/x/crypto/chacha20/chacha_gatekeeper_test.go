// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 17: the AVX-512
// assembly against the generic code.

//go:build amd64 && gc && !purego

package chacha20

import (
	"bytes"
	"math/rand"
	"testing"
)

// withGeneric runs f with the assembly switched off.
func withGeneric(f func()) {
	saved := useAVX512
	useAVX512 = false
	defer func() { useAVX512 = saved }()
	f()
}

// TestAVX512MatchesGeneric checks that the assembly and the generic code
// give the same bytes for messages of every length around the group size,
// fed in pieces of random sizes, from counters near the end of the 32-bit
// range too, in place and not.
func TestAVX512MatchesGeneric(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512 on this CPU: the assembly cannot run")
	}
	r := rand.New(rand.NewSource(17))
	key := make([]byte, KeySize)
	nonce := make([]byte, NonceSize)
	for _, counter := range []uint32{0, 1, 15, 1<<32 - 200} {
		for _, n := range []int{1, 63, 64, 1023, 1024, 1025, 2048, 4095, 4096 + 17, 32768 + 21, 12800} {
			if uint64(counter)+uint64(n+63)/64 > 1<<32 {
				continue
			}
			r.Read(key)
			r.Read(nonce)
			src := make([]byte, n)
			r.Read(src)

			want := make([]byte, n)
			withGeneric(func() {
				c, _ := NewUnauthenticatedCipher(key, nonce)
				c.SetCounter(counter)
				c.XORKeyStream(want, src)
			})

			for _, inPlace := range []bool{false, true} {
				c, _ := NewUnauthenticatedCipher(key, nonce)
				c.SetCounter(counter)
				got := make([]byte, n)
				in := src
				if inPlace {
					copy(got, src)
					in = got
				}
				// Pieces of random sizes, so the assembly also starts
				// after a part-used block and ends before the last one.
				for off := 0; off < n; {
					piece := 1 + r.Intn(3000)
					if piece > n-off {
						piece = n - off
					}
					c.XORKeyStream(got[off:off+piece], in[off:off+piece])
					off += piece
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("counter %d, %d bytes, in place %v: the assembly's keystream differs", counter, n, inPlace)
				}
			}
		}
	}
}

// TestAVX512CounterOverflow checks that the last block before the counter
// wraps can still be had, as with the generic code, and that the next
// call panics.
func TestAVX512CounterOverflow(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512 on this CPU: the assembly cannot run")
	}
	key := make([]byte, KeySize)
	nonce := make([]byte, NonceSize)
	c, _ := NewUnauthenticatedCipher(key, nonce)
	c.SetCounter(1<<32 - 32)
	buf := make([]byte, 32*64)
	c.XORKeyStream(buf, buf)
	var want []byte
	withGeneric(func() {
		g, _ := NewUnauthenticatedCipher(key, nonce)
		g.SetCounter(1<<32 - 32)
		want = make([]byte, 32*64)
		g.XORKeyStream(want, want)
	})
	if !bytes.Equal(buf, want) {
		t.Fatal("the last 32 blocks differ")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("no panic after the counter's last block")
		}
	}()
	c.XORKeyStream(buf[:1], buf[:1])
}

func BenchmarkXORKeyStream32K(b *testing.B) {
	for _, name := range []string{"avx512", "generic"} {
		b.Run(name, func(b *testing.B) {
			if name == "avx512" && !useAVX512 {
				b.Skip("no AVX-512")
			}
			saved := useAVX512
			useAVX512 = name == "avx512"
			defer func() { useAVX512 = saved }()
			key := make([]byte, KeySize)
			nonce := make([]byte, NonceSize)
			buf := make([]byte, 32768+21)
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				c, _ := NewUnauthenticatedCipher(key, nonce)
				c.SetCounter(1)
				c.XORKeyStream(buf, buf)
			}
		})
	}
}
