// Copyright 2012 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

//go:build gc && !purego && (loong64 || ppc64 || ppc64le || riscv64)

package poly1305

// GATEKEEPER PATCH 18: moved here from sum_asm.go, which amd64 shares but
// where update is written in Go (sum_amd64.go).

//go:noescape
func update(state *macState, msg []byte)
