// Copyright 2018 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

//go:build (!amd64 && !arm64 && !loong64 && !s390x && !ppc64 && !ppc64le) || !gc || purego

package chacha20

// GATEKEEPER PATCH 17: amd64 is left out above; it has chacha_amd64.go.

const bufSize = blockSize

func (s *Cipher) xorKeyStreamBlocks(dst, src []byte) {
	s.xorKeyStreamBlocksGeneric(dst, src)
}
