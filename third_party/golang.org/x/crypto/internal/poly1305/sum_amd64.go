// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 18: Poly1305 in
// AVX-512 assembly, eight blocks side by side.

//go:build gc && !purego

package poly1305

import (
	"math/bits"

	"golang.org/x/sys/cpu"
)

// useAVX512 reports whether blocksAVX512 may run: AVX-512F, with the
// operating system saving the ZMM registers (which x/sys/cpu checks), and
// AVX2 for the final sums (every AVX-512 CPU has it, a VM's CPU mask may
// not).
var useAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX2

const (
	// vectorGroup is the number of message bytes blocksAVX512 takes per
	// step: eight 16-byte blocks.
	vectorGroup = 8 * TagSize

	// vectorMin is the shortest message update hands to blocksAVX512.
	// Below it, working out r², ..., r⁸ costs more than the vector code
	// saves over updateScalar.
	vectorMin = 1024
)

// updateScalar is upstream's amd64 assembly (sum_amd64.s): one block at
// a time, the last one possibly partial.
//
//go:noescape
func updateScalar(state *macState, msg []byte)

// blocksAVX512 absorbs n bytes of msg, a positive multiple of vectorGroup,
// into h, which holds the accumulator in five 26-bit limbs, with the
// powers of r in p (see powers).
//
//go:noescape
func blocksAVX512(h *[5]uint64, p *powers, msg *byte, n int)

// update absorbs msg into state.h, as updateScalar. Long messages go
// through blocksAVX512, all but their last few blocks.
func update(state *macState, msg []byte) {
	if n := len(msg) - len(msg)%vectorGroup; useAVX512 && n >= vectorMin {
		updateVector(state, msg[:n])
		msg = msg[n:]
	}
	if len(msg) > 0 {
		updateScalar(state, msg)
	}
}

// mask26 keeps the low 26 bits of a limb.
const mask26 = 1<<26 - 1

// powers is what blocksAVX512 multiplies by, in 26-bit limbs, each as a
// 64-bit lane of a ZMM register: r[i][j] is limb i of r⁸⁻ʲ, so lane 0
// holds r⁸, which every step but the last multiplies all eight lanes by,
// and the last multiplies lane j, which has summed blocks j, j+8, j+16,
// ..., by r⁸⁻ʲ. s[i] is 5 * r[i], for the terms that wrap past 2¹³⁰
// (s[0] is not used).
type powers struct {
	r [5][8]uint64
	s [5][8]uint64
}

// updateVector absorbs msg, a multiple of vectorGroup long, into state.h
// through blocksAVX512.
func updateVector(state *macState, msg []byte) {
	var p powers
	r := limbs26(state.r[0], state.r[1], 0)
	pow := r
	for j := 7; ; j-- {
		for i, limb := range pow {
			p.r[i][j] = limb
			p.s[i][j] = 5 * limb
		}
		if j == 0 {
			break
		}
		mulMod26(&pow, &r)
	}

	h := limbs26(state.h[0], state.h[1], state.h[2])
	blocksAVX512(&h, &p, &msg[0], len(msg))
	state.h[0], state.h[1], state.h[2] = fromLimbs26(h)
}

// limbs26 splits the 130-or-so-bit number x0 + x1·2⁶⁴ + x2·2¹²⁸ into five
// 26-bit limbs, the last one taking all the bits from 2¹⁰⁴ up (x2 is at
// most 7 in a macState, so that limb stays under 2²⁷).
func limbs26(x0, x1, x2 uint64) [5]uint64 {
	return [5]uint64{
		x0 & mask26,
		(x0 >> 26) & mask26,
		(x0>>52 | x1<<12) & mask26,
		(x1 >> 14) & mask26,
		x1>>40 | x2<<24,
	}
}

// carry26 brings every limb of a back under 2²⁶ (the second limb may stay
// a few units above), folding what passes 2¹³⁰ back in times 5, since
// 2¹³⁰ = 5 mod 2¹³⁰ - 5. Limbs may be up to 2⁶¹ on entry.
func carry26(a *[5]uint64) {
	a0, a1, a2, a3, a4 := a[0], a[1], a[2], a[3], a[4]
	a1 += a0 >> 26
	a2 += a1 >> 26
	a3 += a2 >> 26
	a4 += a3 >> 26
	a0 = a0&mask26 + 5*(a4>>26)
	a1, a2, a3, a4 = a1&mask26, a2&mask26, a3&mask26, a4&mask26
	// Again: a0 may have grown to about 2³⁷, and a1 to 2²⁶ + 2¹¹.
	a1 += a0 >> 26
	a2 += a1 >> 26
	a3 += a2 >> 26
	a4 += a3 >> 26
	a0 = a0&mask26 + 5*(a4>>26)
	a1, a2, a3, a4 = a1&mask26, a2&mask26, a3&mask26, a4&mask26
	a1 += a0 >> 26
	a[0], a[1], a[2], a[3], a[4] = a0&mask26, a1, a2, a3, a4
}

// mulMod26 sets a to a·b mod 2¹³⁰ - 5, partly reduced, for limbs under 2²⁷.
func mulMod26(a, b *[5]uint64) {
	a0, a1, a2, a3, a4 := a[0], a[1], a[2], a[3], a[4]
	b0, b1, b2, b3, b4 := b[0], b[1], b[2], b[3], b[4]
	s1, s2, s3, s4 := 5*b1, 5*b2, 5*b3, 5*b4
	a[0] = a0*b0 + a1*s4 + a2*s3 + a3*s2 + a4*s1
	a[1] = a0*b1 + a1*b0 + a2*s4 + a3*s3 + a4*s2
	a[2] = a0*b2 + a1*b1 + a2*b0 + a3*s4 + a4*s3
	a[3] = a0*b3 + a1*b2 + a2*b1 + a3*b0 + a4*s4
	a[4] = a0*b4 + a1*b3 + a2*b2 + a3*b1 + a4*b0
	carry26(a)
}

// fromLimbs26 joins the limbs blocksAVX512 left (each under 2⁶¹) into the
// macState form, h0 + h1·2⁶⁴ + h2·2¹²⁸: after carry26 the value is under
// 2¹³⁰ + 2⁵³, so h2 is at most 4, which the scalar code allows.
func fromLimbs26(a [5]uint64) (h0, h1, h2 uint64) {
	carry26(&a)
	// a[0] + a[1]·2²⁶ < 2⁵⁴; a[2]·2⁵² spills its top 14 bits into h1, and
	// a[4]·2¹⁰⁴ its top 2 into h2.
	h0, c := bits.Add64(a[0]+a[1]<<26, a[2]<<52, 0)
	h1, c = bits.Add64(a[2]>>12+a[3]<<14+c, a[4]<<40, 0)
	h2 = a[4]>>24 + c
	return h0, h1, h2
}
