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
