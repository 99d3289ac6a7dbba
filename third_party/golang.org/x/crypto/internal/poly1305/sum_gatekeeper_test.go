// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 18: the AVX-512
// assembly against the generic code.

//go:build amd64 && gc && !purego

package poly1305

import (
	"bytes"
	"math/rand"
	"testing"
)

// TestAVX512MatchesGeneric checks the tag of messages long enough for the
// vector code against sumGeneric: random keys and messages, and the
// extremes (every bit of r that clamping leaves, every message bit set),
// of lengths around the group and threshold sizes, in one Sum and written
// in pieces of random sizes, so that the vector code also starts from an
// accumulator the scalar code left.
func TestAVX512MatchesGeneric(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512 on this CPU: the assembly cannot run")
	}
	r := rand.New(rand.NewSource(18))
	lengths := []int{vectorMin - 1, vectorMin, vectorMin + 1, vectorMin + 15, vectorMin + 16,
		vectorMin + vectorGroup - 1, vectorMin + vectorGroup, 2048 + 100, 4 + 32768 + 12, 65536}
	fills := map[string]func(b []byte){
		"random": func(b []byte) { r.Read(b) },
		"ones":   func(b []byte) { fillBytes(b, 0xff) },
		"zeros":  func(b []byte) { fillBytes(b, 0) },
	}
	for keyName, keyFill := range fills {
		for msgName, msgFill := range fills {
			for _, n := range lengths {
				var key [32]byte
				keyFill(key[:])
				msg := make([]byte, n)
				msgFill(msg)

				var want, got [TagSize]byte
				sumGeneric(&want, msg, &key)
				Sum(&got, msg, &key)
				if got != want {
					t.Fatalf("key %s, message %s of %d bytes: Sum differs from the generic code", keyName, msgName, n)
				}

				m := New(&key)
				for off := 0; off < n; {
					piece := 1 + r.Intn(3000)
					if r.Intn(4) == 0 {
						piece = 1 + r.Intn(40) // a short piece: the next long one starts mid-block
					}
					piece = min(piece, n-off)
					m.Write(msg[off : off+piece])
					off += piece
				}
				if tag := m.Sum(nil); !bytes.Equal(tag, want[:]) {
					t.Fatalf("key %s, message %s of %d bytes, written in pieces: the tag differs from the generic code", keyName, msgName, n)
				}
			}
		}
	}
}

// TestAVX512LargeAccumulator starts the vector code from the largest
// accumulator the scalar code leaves (h2 = 5) and checks it against the
// generic code from the same state.
func TestAVX512LargeAccumulator(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512 on this CPU: the assembly cannot run")
	}
	var key [32]byte
	fillBytes(key[:], 0xff)
	msg := make([]byte, 4096)
	fillBytes(msg, 0xff)
	for _, h := range [][3]uint64{{^uint64(0), ^uint64(0), 5}, {0, 0, 4}, {1, 0, 0}} {
		var want, got macState
		initialize(&key, &want)
		want.h = h
		got = want
		updateGeneric(&want, msg)
		update(&got, msg)
		var wantTag, gotTag [TagSize]byte
		finalize(&wantTag, &want.h, &want.s)
		finalize(&gotTag, &got.h, &got.s)
		if gotTag != wantTag {
			t.Fatalf("from h = %x: the vector code's tag differs from the generic code", h)
		}
	}
}

// TestAVX512Direct calls the vector code itself, so that it cannot pass
// with the fast path off, from random accumulators (h2 up to 5, the most
// the scalar code leaves) over one to 40 groups of random messages, and
// checks the result against the generic code and that it leaves h2 at
// most 4. A length short of a group leaves the accumulator alone.
func TestAVX512Direct(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512 on this CPU: the assembly cannot run")
	}
	r := rand.New(rand.NewSource(181))
	for i := 0; i < 200; i++ {
		var key [32]byte
		r.Read(key[:])
		msg := make([]byte, vectorGroup*(1+r.Intn(40)))
		r.Read(msg)
		var want macState
		initialize(&key, &want)
		want.h = [3]uint64{r.Uint64(), r.Uint64(), uint64(r.Intn(6))}
		got := want
		updateGeneric(&want, msg)
		updateVector(&got, msg)
		var wantTag, gotTag [TagSize]byte
		finalize(&wantTag, &want.h, &want.s)
		finalize(&gotTag, &got.h, &got.s)
		if gotTag != wantTag {
			t.Fatalf("%d bytes from h = %x: the vector code's tag differs from the generic code", len(msg), want.h)
		}
		if got.h[2] > 4 {
			t.Fatalf("the vector code left h2 = %d", got.h[2])
		}
	}

	h := [5]uint64{1, 2, 3, 4, 5}
	var p powers
	msg := make([]byte, vectorGroup)
	blocksAVX512(&h, &p, &msg[0], vectorGroup-1)
	if h != [5]uint64{1, 2, 3, 4, 5} {
		t.Fatal("a length short of a group changed the accumulator")
	}
}

// FuzzAVX512 compares update with the generic code for any key, starting
// accumulator and message (patterned, all ones, all zeros), and a MAC
// written in three pieces with the generic Sum.
func FuzzAVX512(f *testing.F) {
	f.Add(make([]byte, 32), uint64(0), uint64(0), uint8(0), uint16(2048), uint16(5), uint16(17), uint8(0))
	f.Add(bytes.Repeat([]byte{0xff}, 32), ^uint64(0), ^uint64(0), uint8(5), uint16(4+32768+20), uint16(1), uint16(3000), uint8(2))
	f.Add(bytes.Repeat([]byte{0xff}, 32), uint64(1), uint64(0), uint8(3), uint16(1024), uint16(1023), uint16(1024), uint8(5))
	f.Fuzz(func(t *testing.T, keyBytes []byte, h0, h1 uint64, h2 uint8, length, cut1, cut2 uint16, fill uint8) {
		if !useAVX512 {
			t.Skip("no AVX-512 on this CPU: the assembly cannot run")
		}
		if len(keyBytes) < 32 {
			return
		}
		var key [32]byte
		copy(key[:], keyBytes)
		n := int(length)
		msg := make([]byte, n)
		for i := range msg {
			switch fill % 3 {
			case 0:
				msg[i] = byte(i*131) ^ byte(h0)
			case 1:
				msg[i] = 0xff
			}
		}
		var want, got macState
		initialize(&key, &want)
		want.h = [3]uint64{h0, h1, uint64(h2 % 6)}
		got = want
		updateGeneric(&want, msg)
		update(&got, msg)
		var wantTag, gotTag [TagSize]byte
		finalize(&wantTag, &want.h, &want.s)
		finalize(&gotTag, &got.h, &got.s)
		if gotTag != wantTag {
			t.Fatalf("%d bytes from h = %x: update differs from the generic code", n, want.h)
		}

		var ref [TagSize]byte
		sumGeneric(&ref, msg, &key)
		a, b := int(cut1)%(n+1), int(cut2)%(n+1)
		if a > b {
			a, b = b, a
		}
		m := New(&key)
		m.Write(msg[:a])
		m.Write(msg[a:b])
		m.Write(msg[b:])
		if !bytes.Equal(m.Sum(nil), ref[:]) {
			t.Fatalf("%d bytes written cut at %d and %d: the tag differs from the generic code", n, a, b)
		}
	})
}

func fillBytes(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

// BenchmarkSSHPacket is the MAC of one full SSH data packet (its length,
// 32 KiB of data and the rest of the packet), with and without the vector
// code.
func BenchmarkSSHPacket(b *testing.B) {
	for _, name := range []string{"avx512", "scalar"} {
		b.Run(name, func(b *testing.B) {
			if name == "avx512" && !useAVX512 {
				b.Skip("no AVX-512")
			}
			saved := useAVX512
			useAVX512 = name == "avx512"
			defer func() { useAVX512 = saved }()
			var key [32]byte
			var tag [TagSize]byte
			msg := make([]byte, 4+32768+20)
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				Sum(&tag, msg, &key)
			}
		})
	}
}
