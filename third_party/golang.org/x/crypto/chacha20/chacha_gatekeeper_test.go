// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 17: the AVX-512
// assembly against the generic code.

//go:build amd64 && gc && !purego

package chacha20

import (
	"bytes"
	"math/rand"
	"strings"
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

// TestAVX512Direct calls the assembly itself, so that it cannot pass with
// the fast path off, on one to 32 groups lying between guard bytes, and
// checks the bytes against the generic code, that nothing around dst is
// written, and that the counter moves on by one per block, wrapping to 0
// at the end of its range as the generic code's does. A length short of a
// group writes nothing.
func TestAVX512Direct(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512 on this CPU: the assembly cannot run")
	}
	r := rand.New(rand.NewSource(171))
	key := make([]byte, KeySize)
	nonce := make([]byte, NonceSize)
	for _, groups := range []int{1, 2, 3, 5, 32} {
		n := groups * avx512Group
		for _, counter := range []uint32{0, 1, uint32(1<<32 - groups*16)} {
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

			c, _ := NewUnauthenticatedCipher(key, nonce)
			backing := bytes.Repeat([]byte{0xa5}, n+128)
			dst := backing[64 : 64+n]
			got := counter
			xorKeyStreamAVX512(&dst[0], &src[0], n, &c.key, &c.nonce, &got)
			if !bytes.Equal(dst, want) {
				t.Fatalf("%d groups from counter %d: the assembly's keystream differs", groups, counter)
			}
			if strings.Trim(string(backing[:64])+string(backing[64+n:]), "\xa5") != "" {
				t.Fatalf("%d groups: bytes around dst were written", groups)
			}
			if want := counter + uint32(groups*16); got != want {
				t.Fatalf("%d groups from counter %d: counter %d, want %d", groups, counter, got, want)
			}
		}
	}

	c, _ := NewUnauthenticatedCipher(key, nonce)
	buf := bytes.Repeat([]byte{0xa5}, avx512Group)
	counter := uint32(7)
	xorKeyStreamAVX512(&buf[0], &buf[0], avx512Group-1, &c.key, &c.nonce, &counter)
	if counter != 7 || strings.Trim(string(buf), "\xa5") != "" {
		t.Fatal("a length short of a group was not left alone")
	}
}

// FuzzAVX512 compares the assembly with the generic code for any key,
// nonce, length, start offset and counter (often near the end of its
// range), the message written in three pieces, in place or not, between
// guard bytes; both must panic in the same cases (a counter overflow).
func FuzzAVX512(f *testing.F) {
	f.Add(make([]byte, KeySize+NonceSize), uint32(0), uint16(1100), uint16(3), uint16(7), false, uint8(0))
	f.Add(make([]byte, KeySize+NonceSize), uint32(79), uint16(2500), uint16(1024), uint16(700), true, uint8(5))
	f.Add(bytes.Repeat([]byte{0xff}, KeySize+NonceSize), uint32(1), uint16(20000), uint16(64), uint16(4000), false, uint8(63))
	f.Fuzz(func(t *testing.T, keyNonce []byte, counter uint32, length, cut1, cut2 uint16, inPlace bool, offset uint8) {
		if !useAVX512 {
			t.Skip("no AVX-512 on this CPU: the assembly cannot run")
		}
		if len(keyNonce) < KeySize+NonceSize {
			return
		}
		key, nonce := keyNonce[:KeySize], keyNonce[KeySize:KeySize+NonceSize]
		if counter&1 == 1 { // an odd counter stands for one up to 400 blocks before the wrap
			counter = uint32(1<<32 - 1 - uint64(counter>>1)%400)
		}
		n, off := int(length), int(offset%64)
		a, b := int(cut1)%(n+1), int(cut2)%(n+1)
		if a > b {
			a, b = b, a
		}
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i*7) ^ byte(counter)
		}
		run := func(dst, src []byte) (panicked bool) {
			defer func() { panicked = recover() != nil }()
			c, _ := NewUnauthenticatedCipher(key, nonce)
			c.SetCounter(counter)
			c.XORKeyStream(dst[:a], src[:a])
			c.XORKeyStream(dst[a:b], src[a:b])
			c.XORKeyStream(dst[b:], src[b:])
			return false
		}
		want := make([]byte, n)
		var wantPanic bool
		withGeneric(func() { wantPanic = run(want, src) })

		backing := bytes.Repeat([]byte{0xa5}, off+n+64)
		dst := backing[off : off+n]
		in := src
		if inPlace {
			copy(dst, src)
			in = dst
		}
		if gotPanic := run(dst, in); gotPanic != wantPanic {
			t.Fatalf("panic %v, the generic code's %v", gotPanic, wantPanic)
		}
		if wantPanic {
			return
		}
		if !bytes.Equal(dst, want) {
			t.Fatalf("%d bytes from counter %d, cut at %d and %d: the keystream differs", n, counter, a, b)
		}
		if strings.Trim(string(backing[:off])+string(backing[off+n:]), "\xa5") != "" {
			t.Fatal("bytes around dst were written")
		}
	})
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
