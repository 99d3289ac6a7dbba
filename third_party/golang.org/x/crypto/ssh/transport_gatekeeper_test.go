// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 12: tests of the
// transport's read-ahead buffer.

package ssh

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// chunkReader returns at most chunk bytes per Read (all it is asked for
// when chunk is 0) and counts its calls.
type chunkReader struct {
	r     io.Reader
	chunk int
	calls int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	c.calls++
	if c.chunk > 0 && len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.r.Read(p)
}

// TestPacketReaderStream: whatever the sizes the connection returns and the
// mix of Read and readFull calls (with and without room to read ahead),
// every byte comes out once and in order, and the end of the stream is
// io.EOF at a boundary and io.ErrUnexpectedEOF within a readFull.
func TestPacketReaderStream(t *testing.T) {
	stream := make([]byte, 200000)
	rand.Read(stream)
	for _, chunk := range []int{0, 1, 7, 255, 256, 257, 1000, 40000} {
		src := &chunkReader{r: bytes.NewReader(stream), chunk: chunk}
		b := newPacketReader(src)
		var got []byte
		for i := 0; len(got) < len(stream); i++ {
			n := []int{4, 1, 300, 32813, 100, 256, 5000, 255}[i%8]
			n = min(n, len(stream)-len(got))
			room := []int{0, 20, 256, 1000}[i%4]
			p := make([]byte, n, n+room)
			if i%3 == 0 {
				m, err := b.Read(p)
				if err != nil {
					t.Fatalf("chunk %d: Read after %d bytes: %v", chunk, len(got), err)
				}
				p = p[:m]
			} else if err := b.readFull(p); err != nil {
				t.Fatalf("chunk %d: readFull of %d after %d bytes: %v", chunk, n, len(got), err)
			}
			got = append(got, p...)
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("chunk %d: the bytes read differ from those sent", chunk)
		}
		if n, err := b.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("chunk %d: Read at the end: %d, %v; want io.EOF", chunk, n, err)
		}
	}

	b := newPacketReader(bytes.NewReader(stream[:100]))
	if err := b.readFull(make([]byte, 150, 400)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("readFull past the end: %v, want io.ErrUnexpectedEOF", err)
	}
	// As io.ReadFull: nothing at all before the end is io.EOF.
	b = newPacketReader(bytes.NewReader(stream[:4]))
	if _, err := b.Read(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := b.readFull(make([]byte, 150, 400)); err != io.EOF {
		t.Fatalf("readFull at the end: %v, want io.EOF", err)
	}
}

// TestBulkPacketsOneReadEach: a stream of full channel data packets takes
// one read from the connection per packet, with either AEAD cipher (with
// bufio.Reader it took two), and every packet reads back intact.
func TestBulkPacketsOneReadEach(t *testing.T) {
	for _, name := range []string{CipherAES128GCM, CipherChaCha20Poly1305} {
		t.Run(name, func(t *testing.T) {
			algs := DirectionAlgorithms{Cipher: name, MAC: HMACSHA256, compression: compressionNone}
			var w, r connectionState
			var err error
			if w.packetCipher, err = newPacketCipher(clientKeys, algs, &kexResult{Hash: crypto.SHA256}); err != nil {
				t.Fatal(err)
			}
			if r.packetCipher, err = newPacketCipher(clientKeys, algs, &kexResult{Hash: crypto.SHA256}); err != nil {
				t.Fatal(err)
			}
			const packets = 50
			var sent [][]byte
			var wire bytes.Buffer
			bw := bufio.NewWriter(&wire)
			for range packets {
				p := make([]byte, 9+32768)
				rand.Read(p)
				p[0] = msgChannelData
				binary.BigEndian.PutUint32(p[5:], 32768)
				sent = append(sent, p)
				if err := w.writePacket(bw, rand.Reader, bytes.Clone(p), false); err != nil {
					t.Fatal(err)
				}
			}
			src := &chunkReader{r: &wire}
			br := newPacketReader(src)
			for i, want := range sent {
				got, err := r.readPacket(br, false)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("packet %d: %d bytes, %v; want it as sent", i, len(got), err)
				}
				if arr := pooledArray(got); arr != nil {
					packetPool.Put(arr)
				}
			}
			if src.calls > packets+1 {
				t.Errorf("%d reads from the connection for %d packets, want at most %d", src.calls, packets, packets+1)
			}
		})
	}
}

// TestNoBulkBufferKept: after a bulk packet, neither the writing nor the
// reading cipher keeps a buffer larger than 4 KiB (a connection that
// once moved bulk data went on holding 40 KiB per direction), and small
// packets still reuse the cipher's own buffer. GATEKEEPER PATCH 13.
func TestNoBulkBufferKept(t *testing.T) {
	for _, name := range []string{CipherAES128GCM, CipherChaCha20Poly1305} {
		t.Run(name, func(t *testing.T) {
			algs := DirectionAlgorithms{Cipher: name, MAC: HMACSHA256, compression: compressionNone}
			var w, r connectionState
			var err error
			if w.packetCipher, err = newPacketCipher(clientKeys, algs, &kexResult{Hash: crypto.SHA256}); err != nil {
				t.Fatal(err)
			}
			if r.packetCipher, err = newPacketCipher(clientKeys, algs, &kexResult{Hash: crypto.SHA256}); err != nil {
				t.Fatal(err)
			}
			bufs := func(c packetCipher) (own *[]byte, rb *pooledReadBuf) {
				switch c := c.(type) {
				case *gcmCipher:
					return &c.buf, &c.pooledReadBuf
				case *chacha20Poly1305Cipher:
					return &c.buf, &c.pooledReadBuf
				}
				t.Fatalf("cipher %T", c)
				return nil, nil
			}
			var wire bytes.Buffer
			bw := bufio.NewWriter(&wire)
			br := newPacketReader(&wire)
			for _, size := range []int{100, 9 + 32768, 1000, 20000, 9 + 32768, 50} {
				p := make([]byte, size)
				rand.Read(p)
				p[0] = msgIgnore
				if err := w.writePacket(bw, rand.Reader, bytes.Clone(p), false); err != nil {
					t.Fatal(err)
				}
				got, err := r.readPacket(br, false)
				if err != nil || !bytes.Equal(got, p) {
					t.Fatalf("%d-byte packet: read back %d bytes, %v", size, len(got), err)
				}
				for side, c := range map[string]packetCipher{"writer": w.packetCipher, "reader": r.packetCipher} {
					own, rb := bufs(c)
					if cap(*own) > 4<<10 || rb.arr != nil {
						t.Fatalf("after a %d-byte packet the %s keeps a %d-byte buffer (pooled array held: %v)", size, side, cap(*own), rb.arr != nil)
					}
				}
			}
			if own, _ := bufs(w.packetCipher); cap(*own) == 0 {
				t.Error("the writer keeps no buffer for small packets")
			}
		})
	}
}
