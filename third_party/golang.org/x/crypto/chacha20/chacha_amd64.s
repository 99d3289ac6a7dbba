// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 17: ChaCha20 in
// AVX-512 assembly, sixteen blocks at a time.

//go:build gc && !purego

#include "textflag.h"

// The sixteen blocks of a group are computed side by side: ZMM register i
// holds word i of the state of all sixteen blocks, one block per 32-bit
// lane, so a quarter round on four registers is a quarter round on sixteen
// blocks, and AVX-512's VPROLD is the rotation. At the end the 16x16 words
// are transposed back into sixteen consecutive 64-byte blocks.
//
// Registers: Z0-Z15 the working state, Z16 the block counters of the group,
// Z17 sixteen 16s, Z18-Z25 scratch for the transposition.

// lanes is 0, 1, ..., 15: added to the broadcast counter, one per block.
DATA ·lanes<>+0x00(SB)/4, $0
DATA ·lanes<>+0x04(SB)/4, $1
DATA ·lanes<>+0x08(SB)/4, $2
DATA ·lanes<>+0x0c(SB)/4, $3
DATA ·lanes<>+0x10(SB)/4, $4
DATA ·lanes<>+0x14(SB)/4, $5
DATA ·lanes<>+0x18(SB)/4, $6
DATA ·lanes<>+0x1c(SB)/4, $7
DATA ·lanes<>+0x20(SB)/4, $8
DATA ·lanes<>+0x24(SB)/4, $9
DATA ·lanes<>+0x28(SB)/4, $10
DATA ·lanes<>+0x2c(SB)/4, $11
DATA ·lanes<>+0x30(SB)/4, $12
DATA ·lanes<>+0x34(SB)/4, $13
DATA ·lanes<>+0x38(SB)/4, $14
DATA ·lanes<>+0x3c(SB)/4, $15
GLOBL ·lanes<>(SB), RODATA|NOPTR, $64

// sigma is the constant first row, "expand 32-byte k".
DATA ·sigma<>+0x00(SB)/4, $0x61707865
DATA ·sigma<>+0x04(SB)/4, $0x3320646e
DATA ·sigma<>+0x08(SB)/4, $0x79622d32
DATA ·sigma<>+0x0c(SB)/4, $0x6b206574
GLOBL ·sigma<>(SB), RODATA|NOPTR, $16

// One step of the quarter round, a += b; d ^= a; d <<<= r, on four columns
// or diagonals at once, so the four chains interleave.
#define STEP(a0, b0, d0, a1, b1, d1, a2, b2, d2, a3, b3, d3, r) \
	VPADDD b0, a0, a0; \
	VPADDD b1, a1, a1; \
	VPADDD b2, a2, a2; \
	VPADDD b3, a3, a3; \
	VPXORD a0, d0, d0; \
	VPXORD a1, d1, d1; \
	VPXORD a2, d2, d2; \
	VPXORD a3, d3, d3; \
	VPROLD $r, d0, d0; \
	VPROLD $r, d1, d1; \
	VPROLD $r, d2, d2; \
	VPROLD $r, d3, d3

// Four quarter rounds, (a, b, c, d) for each of the four.
#define QUARTERS(a0, b0, c0, d0, a1, b1, c1, d1, a2, b2, c2, d2, a3, b3, c3, d3) \
	STEP(a0, b0, d0, a1, b1, d1, a2, b2, d2, a3, b3, d3, 16); \
	STEP(c0, d0, b0, c1, d1, b1, c2, d2, b2, c3, d3, b3, 12); \
	STEP(a0, b0, d0, a1, b1, d1, a2, b2, d2, a3, b3, d3, 8); \
	STEP(c0, d0, b0, c1, d1, b1, c2, d2, b2, c3, d3, b3, 7)

// TRANSPOSE4 turns four word registers x0-x3 (word w of every block) into
// four registers in which each 128-bit lane holds words w..w+3 of one block:
// lane L of x0 those of block 4L, of x1 block 4L+1, of x2 4L+2, of x3 4L+3.
#define TRANSPOSE4(x0, x1, x2, x3) \
	VPUNPCKLDQ x1, x0, Z18; \
	VPUNPCKHDQ x1, x0, Z19; \
	VPUNPCKLDQ x3, x2, Z20; \
	VPUNPCKHDQ x3, x2, Z21; \
	VPUNPCKLQDQ Z20, Z18, x0; \
	VPUNPCKHQDQ Z20, Z18, x1; \
	VPUNPCKLQDQ Z21, Z19, x2; \
	VPUNPCKHQDQ Z21, Z19, x3

// XOR4 gathers blocks j, 4+j, 8+j and 12+j from the lanes left by
// TRANSPOSE4 (a0 holds words 0-3 of blocks j, 4+j, 8+j, 12+j, a1 words 4-7,
// and so on), XORs them with src and stores them in dst. oj is 64*j.
#define XOR4(a0, a1, a2, a3, oj) \
	VSHUFI32X4 $0x44, a1, a0, Z18; \
	VSHUFI32X4 $0xee, a1, a0, Z19; \
	VSHUFI32X4 $0x44, a3, a2, Z20; \
	VSHUFI32X4 $0xee, a3, a2, Z21; \
	VSHUFI32X4 $0x88, Z20, Z18, Z22; \
	VSHUFI32X4 $0xdd, Z20, Z18, Z23; \
	VSHUFI32X4 $0x88, Z21, Z19, Z24; \
	VSHUFI32X4 $0xdd, Z21, Z19, Z25; \
	VPXORD oj(SI), Z22, Z22; \
	VPXORD oj+256(SI), Z23, Z23; \
	VPXORD oj+512(SI), Z24, Z24; \
	VPXORD oj+768(SI), Z25, Z25; \
	VMOVDQU32 Z22, oj(DI); \
	VMOVDQU32 Z23, oj+256(DI); \
	VMOVDQU32 Z24, oj+512(DI); \
	VMOVDQU32 Z25, oj+768(DI)

// func xorKeyStreamAVX512(dst, src *byte, n int, key *[8]uint32, nonce *[3]uint32, counter *uint32)
TEXT ·xorKeyStreamAVX512(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ key+24(FP), AX
	MOVQ nonce+32(FP), BX
	MOVQ counter+40(FP), DX

	// Whole groups only: a shorter n (the caller's error) ends here.
	CMPQ CX, $1024
	JB   done

	VPBROADCASTD (DX), Z16
	VPADDD ·lanes<>(SB), Z16, Z16
	MOVL $16, R8
	VPBROADCASTD R8, Z17

group:
	VPBROADCASTD ·sigma<>+0x00(SB), Z0
	VPBROADCASTD ·sigma<>+0x04(SB), Z1
	VPBROADCASTD ·sigma<>+0x08(SB), Z2
	VPBROADCASTD ·sigma<>+0x0c(SB), Z3
	VPBROADCASTD 0(AX), Z4
	VPBROADCASTD 4(AX), Z5
	VPBROADCASTD 8(AX), Z6
	VPBROADCASTD 12(AX), Z7
	VPBROADCASTD 16(AX), Z8
	VPBROADCASTD 20(AX), Z9
	VPBROADCASTD 24(AX), Z10
	VPBROADCASTD 28(AX), Z11
	VMOVDQA64 Z16, Z12
	VPBROADCASTD 0(BX), Z13
	VPBROADCASTD 4(BX), Z14
	VPBROADCASTD 8(BX), Z15

	MOVQ $10, R9

doubleround:
	QUARTERS(Z0, Z4, Z8, Z12, Z1, Z5, Z9, Z13, Z2, Z6, Z10, Z14, Z3, Z7, Z11, Z15)
	QUARTERS(Z0, Z5, Z10, Z15, Z1, Z6, Z11, Z12, Z2, Z7, Z8, Z13, Z3, Z4, Z9, Z14)
	DECQ R9
	JNZ  doubleround

	// Add the input state back in.
	VPADDD.BCST ·sigma<>+0x00(SB), Z0, Z0
	VPADDD.BCST ·sigma<>+0x04(SB), Z1, Z1
	VPADDD.BCST ·sigma<>+0x08(SB), Z2, Z2
	VPADDD.BCST ·sigma<>+0x0c(SB), Z3, Z3
	VPADDD.BCST 0(AX), Z4, Z4
	VPADDD.BCST 4(AX), Z5, Z5
	VPADDD.BCST 8(AX), Z6, Z6
	VPADDD.BCST 12(AX), Z7, Z7
	VPADDD.BCST 16(AX), Z8, Z8
	VPADDD.BCST 20(AX), Z9, Z9
	VPADDD.BCST 24(AX), Z10, Z10
	VPADDD.BCST 28(AX), Z11, Z11
	VPADDD Z16, Z12, Z12
	VPADDD.BCST 0(BX), Z13, Z13
	VPADDD.BCST 4(BX), Z14, Z14
	VPADDD.BCST 8(BX), Z15, Z15

	TRANSPOSE4(Z0, Z1, Z2, Z3)
	TRANSPOSE4(Z4, Z5, Z6, Z7)
	TRANSPOSE4(Z8, Z9, Z10, Z11)
	TRANSPOSE4(Z12, Z13, Z14, Z15)
	XOR4(Z0, Z4, Z8, Z12, 0)
	XOR4(Z1, Z5, Z9, Z13, 64)
	XOR4(Z2, Z6, Z10, Z14, 128)
	XOR4(Z3, Z7, Z11, Z15, 192)

	VPADDD Z17, Z16, Z16
	ADDL   $16, (DX)
	ADDQ   $1024, SI
	ADDQ   $1024, DI
	SUBQ   $1024, CX
	CMPQ   CX, $1024
	JAE    group

	VZEROUPPER

done:
	RET
