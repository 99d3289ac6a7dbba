// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 17: ChaCha20 in
// AVX-512 assembly, sixteen blocks at a time.

//go:build gc && !purego

package chacha20

import "golang.org/x/sys/cpu"

// bufSize stays one block: the assembly takes whole groups of sixteen
// blocks and the generic code the rest, so a short message (a keystroke,
// the Poly1305 key of an SSH packet) costs the blocks it needs and no more.
const bufSize = blockSize

// avx512Group is the number of bytes the assembly handles per iteration.
const avx512Group = 16 * blockSize

// useAVX512 reports whether xorKeyStreamAVX512 may run: AVX-512F, with the
// operating system saving the ZMM registers (which x/sys/cpu checks).
var useAVX512 = cpu.X86.HasAVX512F

// xorKeyStreamAVX512 XORs n bytes of src with the keystream into dst, n a
// multiple of avx512Group, and advances *counter by n/64. The caller makes
// sure the 32-bit counter does not wrap within the n bytes.
//
//go:noescape
func xorKeyStreamAVX512(dst, src *byte, n int, key *[8]uint32, nonce *[3]uint32, counter *uint32)

func (c *Cipher) xorKeyStreamBlocks(dst, src []byte) {
	if n := len(src) - len(src)%avx512Group; useAVX512 && n > 0 {
		_ = dst[n-1] // the assembly writes dst[:n]
		xorKeyStreamAVX512(&dst[0], &src[0], n, &c.key, &c.nonce, &c.counter)
		dst, src = dst[n:], src[n:]
	}
	if len(src) > 0 {
		c.xorKeyStreamBlocksGeneric(dst, src)
	}
}
