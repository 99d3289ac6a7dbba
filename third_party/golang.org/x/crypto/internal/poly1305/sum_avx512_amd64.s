// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 18: Poly1305 in
// AVX-512 assembly, eight blocks side by side.

//go:build gc && !purego

#include "textflag.h"

// Eight accumulators run side by side, one per 64-bit lane: lane j sums
// blocks j, j+8, j+16, ... of the message, each step multiplying by r⁸,
// and the last step multiplies lane j by r⁸⁻ʲ instead, so that the lanes
// add up to what the block-by-block loop computes. Numbers are in five
// 26-bit limbs (radix 2²⁶), one ZMM register per limb, so that VPMULUDQ's
// 32×32→64-bit products of a limb (under 2²⁸ after a message block is
// added) by a limb of r or 5r (under 2²⁹) summed five at a time stay under
// 2⁶⁰. After each product the limbs are carried back under 2²⁶ (the second
// a few units over), what passes 2¹³⁰ folded back times 5.
//
// Registers: Z0-Z4 the accumulators' limbs, Z5-Z9 the limbs of r⁸ and
// Z10-Z13 those of 5r⁸ (the first is not needed), Z14-Z18 a product,
// Z19-Z27 scratch, Z28 and Z29 the indexes that split blocks into their
// low and high 64 bits, Z30 the 2¹²⁸ bit of a full block (in limb 4),
// Z31 the 26-bit mask.

// evens and odds pick the low and high halves of eight blocks from two
// registers of four blocks each, in block order.
DATA ·evens<>+0x00(SB)/8, $0
DATA ·evens<>+0x08(SB)/8, $2
DATA ·evens<>+0x10(SB)/8, $4
DATA ·evens<>+0x18(SB)/8, $6
DATA ·evens<>+0x20(SB)/8, $8
DATA ·evens<>+0x28(SB)/8, $10
DATA ·evens<>+0x30(SB)/8, $12
DATA ·evens<>+0x38(SB)/8, $14
GLOBL ·evens<>(SB), RODATA|NOPTR, $64
DATA ·odds<>+0x00(SB)/8, $1
DATA ·odds<>+0x08(SB)/8, $3
DATA ·odds<>+0x10(SB)/8, $5
DATA ·odds<>+0x18(SB)/8, $7
DATA ·odds<>+0x20(SB)/8, $9
DATA ·odds<>+0x28(SB)/8, $11
DATA ·odds<>+0x30(SB)/8, $13
DATA ·odds<>+0x38(SB)/8, $15
GLOBL ·odds<>(SB), RODATA|NOPTR, $64

// ADDBLOCKS adds the next eight message blocks at SI, split into 26-bit
// limbs with the 2¹²⁸ bit set, to the accumulators.
#define ADDBLOCKS \
	VMOVDQU64   0(SI), Z24; \
	VMOVDQU64   64(SI), Z25; \
	VMOVDQA64   Z29, Z26; \
	VPERMI2Q    Z25, Z24, Z26; \
	VMOVDQA64   Z28, Z27; \
	VPERMI2Q    Z25, Z24, Z27; \
	VPANDQ      Z31, Z26, Z19; \
	VPSRLQ      $26, Z26, Z20; \
	VPANDQ      Z31, Z20, Z20; \
	VPSRLQ      $52, Z26, Z21; \
	VPSLLQ      $12, Z27, Z22; \
	VPORQ       Z22, Z21, Z21; \
	VPANDQ      Z31, Z21, Z21; \
	VPSRLQ      $14, Z27, Z22; \
	VPANDQ      Z31, Z22, Z22; \
	VPSRLQ      $40, Z27, Z23; \
	VPORQ       Z30, Z23, Z23; \
	VPADDQ      Z19, Z0, Z0; \
	VPADDQ      Z20, Z1, Z1; \
	VPADDQ      Z21, Z2, Z2; \
	VPADDQ      Z22, Z3, Z3; \
	VPADDQ      Z23, Z4, Z4

// MULTIPLY sets Z14-Z18 to the accumulators times b (limbs b0-b4, and
// s1-s4 = 5·b1..5·b4), not yet carried.
#define MULTIPLY(b0, b1, b2, b3, b4, s1, s2, s3, s4) \
	VPMULUDQ b0, Z0, Z14; \
	VPMULUDQ s4, Z1, Z19; \
	VPMULUDQ s3, Z2, Z20; \
	VPMULUDQ s2, Z3, Z21; \
	VPMULUDQ s1, Z4, Z22; \
	VPADDQ   Z19, Z14, Z14; \
	VPADDQ   Z21, Z20, Z20; \
	VPADDQ   Z22, Z14, Z14; \
	VPADDQ   Z20, Z14, Z14; \
	VPMULUDQ b1, Z0, Z15; \
	VPMULUDQ b0, Z1, Z23; \
	VPMULUDQ s4, Z2, Z24; \
	VPMULUDQ s3, Z3, Z25; \
	VPMULUDQ s2, Z4, Z26; \
	VPADDQ   Z23, Z15, Z15; \
	VPADDQ   Z25, Z24, Z24; \
	VPADDQ   Z26, Z15, Z15; \
	VPADDQ   Z24, Z15, Z15; \
	VPMULUDQ b2, Z0, Z16; \
	VPMULUDQ b1, Z1, Z19; \
	VPMULUDQ b0, Z2, Z20; \
	VPMULUDQ s4, Z3, Z21; \
	VPMULUDQ s3, Z4, Z22; \
	VPADDQ   Z19, Z16, Z16; \
	VPADDQ   Z21, Z20, Z20; \
	VPADDQ   Z22, Z16, Z16; \
	VPADDQ   Z20, Z16, Z16; \
	VPMULUDQ b3, Z0, Z17; \
	VPMULUDQ b2, Z1, Z23; \
	VPMULUDQ b1, Z2, Z24; \
	VPMULUDQ b0, Z3, Z25; \
	VPMULUDQ s4, Z4, Z26; \
	VPADDQ   Z23, Z17, Z17; \
	VPADDQ   Z25, Z24, Z24; \
	VPADDQ   Z26, Z17, Z17; \
	VPADDQ   Z24, Z17, Z17; \
	VPMULUDQ b4, Z0, Z18; \
	VPMULUDQ b3, Z1, Z19; \
	VPMULUDQ b2, Z2, Z20; \
	VPMULUDQ b1, Z3, Z21; \
	VPMULUDQ b0, Z4, Z22; \
	VPADDQ   Z19, Z18, Z18; \
	VPADDQ   Z21, Z20, Z20; \
	VPADDQ   Z22, Z18, Z18; \
	VPADDQ   Z20, Z18, Z18

// CARRY carries the product in Z14-Z18 into the accumulators Z0-Z4.
#define CARRY \
	VPSRLQ $26, Z14, Z19; \
	VPANDQ Z31, Z14, Z14; \
	VPADDQ Z19, Z15, Z15; \
	VPSRLQ $26, Z15, Z19; \
	VPANDQ Z31, Z15, Z15; \
	VPADDQ Z19, Z16, Z16; \
	VPSRLQ $26, Z16, Z19; \
	VPANDQ Z31, Z16, Z2; \
	VPADDQ Z19, Z17, Z17; \
	VPSRLQ $26, Z17, Z19; \
	VPANDQ Z31, Z17, Z3; \
	VPADDQ Z19, Z18, Z18; \
	VPSRLQ $26, Z18, Z19; \
	VPANDQ Z31, Z18, Z4; \
	VPSLLQ $2, Z19, Z20; \
	VPADDQ Z20, Z19, Z19; \
	VPADDQ Z19, Z14, Z14; \
	VPSRLQ $26, Z14, Z19; \
	VPANDQ Z31, Z14, Z0; \
	VPADDQ Z19, Z15, Z1

// SUMLANES stores the sum of the eight lanes of Zn at off(AX). Its 256- and
// 128-bit instructions are AVX2's (VEX), which useAVX512 also requires.
#define SUMLANES(Zn, Yn, Xn, off) \
	VEXTRACTI64X4 $1, Zn, Y14; \
	VPADDQ        Y14, Yn, Yn; \
	VEXTRACTI128  $1, Yn, X14; \
	VPADDQ        X14, Xn, Xn; \
	VPSHUFD       $0x4e, Xn, X14; \
	VPADDQ        X14, Xn, Xn; \
	VMOVQ         Xn, off(AX)

// func blocksAVX512(h *[5]uint64, p *powers, msg *byte, n int)
TEXT ·blocksAVX512(SB), NOSPLIT, $0-32
	MOVQ h+0(FP), AX
	MOVQ p+8(FP), BX
	MOVQ msg+16(FP), SI
	MOVQ n+24(FP), CX

	// Whole groups only: a shorter n (the caller's error) leaves h as it was.
	CMPQ CX, $128
	JB   none

	MOVQ         $0x3ffffff, R8
	VPBROADCASTQ R8, Z31
	MOVQ         $0x1000000, R8
	VPBROADCASTQ R8, Z30
	VMOVDQU64    ·evens<>(SB), Z29
	VMOVDQU64    ·odds<>(SB), Z28

	// The accumulator so far goes into lane 0, the others start at 0.
	VMOVQ 0(AX), X0
	VMOVQ 8(AX), X1
	VMOVQ 16(AX), X2
	VMOVQ 24(AX), X3
	VMOVQ 32(AX), X4
	ADDBLOCKS
	ADDQ  $128, SI
	SUBQ  $128, CX
	CMPQ  CX, $128
	JB    last

	// r⁸ and 5r⁸ in every lane: lane 0 of p.r and p.s.
	VPBROADCASTQ 0(BX), Z5
	VPBROADCASTQ 64(BX), Z6
	VPBROADCASTQ 128(BX), Z7
	VPBROADCASTQ 192(BX), Z8
	VPBROADCASTQ 256(BX), Z9
	VPBROADCASTQ 384(BX), Z10
	VPBROADCASTQ 448(BX), Z11
	VPBROADCASTQ 512(BX), Z12
	VPBROADCASTQ 576(BX), Z13

step:
	MULTIPLY(Z5, Z6, Z7, Z8, Z9, Z10, Z11, Z12, Z13)
	CARRY
	ADDBLOCKS
	ADDQ $128, SI
	SUBQ $128, CX
	CMPQ CX, $128
	JAE  step

last:
	// Lane j times r⁸⁻ʲ, straight from p.
	MULTIPLY(0(BX), 64(BX), 128(BX), 192(BX), 256(BX), 384(BX), 448(BX), 512(BX), 576(BX))
	CARRY
	SUMLANES(Z0, Y0, X0, 0)
	SUMLANES(Z1, Y1, X1, 8)
	SUMLANES(Z2, Y2, X2, 16)
	SUMLANES(Z3, Y3, X3, 24)
	SUMLANES(Z4, Y4, X4, 32)
	VZEROUPPER

none:
	RET
