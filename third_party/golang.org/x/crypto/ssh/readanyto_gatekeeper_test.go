// Copyright 2026 The gatekeeper authors. Tests of GATEKEEPER PATCH 15
// (ReadAnyTo: channel data handed on where it lies).

package ssh

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
)

// TestReadAnyTo: over whole connections with either AEAD cipher, a reader
// using ReadAnyTo alone gets more than a window of data and of stderr,
// written at once in sizes around the packet size, each byte once and in
// order within its stream, then io.EOF. Each piece is at most one packet's
// payload and stays intact while write holds it, though the peer goes on
// sending (the pool must not hand its array to a later packet); bulk
// pieces come in the pooled arrays they were read into, not copied.
func TestReadAnyTo(t *testing.T) {
	for _, name := range []string{CipherAES128GCM, CipherChaCha20Poly1305} {
		t.Run(name, func(t *testing.T) {
			conf := &ClientConfig{HostKeyCallback: InsecureIgnoreHostKey()}
			conf.Ciphers = []string{name}
			_, client, server := channelOverConn(t, conf)
			const size = 3 * channelWindowSize
			data, stderr := make([]byte, size), make([]byte, size)
			rand.Read(data)
			rand.Read(stderr)
			var wg sync.WaitGroup
			for _, w := range []struct {
				w io.Writer
				b []byte
			}{{client, data}, {client.Stderr(), stderr}} {
				wg.Go(func() {
					sizes := []int{32768, 100, 70000, 5000, 32769}
					for i, b := 0, w.b; len(b) > 0; i++ {
						n := min(len(b), sizes[i%len(sizes)])
						if _, err := w.w.Write(b[:n]); err != nil {
							t.Error(err)
							return
						}
						b = b[n:]
					}
				})
			}
			go func() {
				wg.Wait()
				client.CloseWrite()
			}()

			r := server.(*channel)
			var got [2]bytes.Buffer
			pieces, inPlace := 0, 0
			write := func(p []byte, extended uint32) (int, error) {
				if len(p) > channelMaxPacket {
					t.Errorf("a piece of %d bytes, more than a packet's payload", len(p))
				}
				pieces++
				if cap(p) >= pooledPacketMin {
					inPlace++
				}
				before := bytes.Clone(p)
				got[extended].Write(p)
				if !bytes.Equal(p, before) {
					t.Error("a piece changed while write held it")
				}
				return len(p), nil
			}
			for {
				n, ext, err := r.ReadAnyTo(-1, write)
				if err == io.EOF && n == 0 {
					break
				}
				if err != nil || ext > 1 {
					t.Fatalf("ReadAnyTo: %d bytes of stream %d, %v", n, ext, err)
				}
				if n > readAnyToMax+channelMaxPacket {
					t.Fatalf("one ReadAnyTo handed on %d bytes", n)
				}
			}
			if !bytes.Equal(got[0].Bytes(), data) || !bytes.Equal(got[1].Bytes(), stderr) {
				t.Errorf("read %d bytes of data and %d of stderr, want %d each, in order", got[0].Len(), got[1].Len(), size)
			}
			if inPlace < pieces/4 {
				t.Errorf("%d of %d pieces came in a pooled packet array; want most of the bulk ones", inPlace, pieces)
			}
		})
	}
}

// TestReadAnyToStops: ReadAnyTo reports what write took when write fails
// or takes less than a piece, and the rest stays to be read; with nothing
// to read it waits as ReadAnyWait does (os.ErrDeadlineExceeded, io.EOF)
// without calling write.
func TestReadAnyToStops(t *testing.T) {
	client, server, _ := acceptedPair(t)
	arrived := make(chan struct{}, 16)
	server.SetNotify(func() { arrived <- struct{}{} })
	never := func(p []byte, _ uint32) (int, error) {
		t.Errorf("write called with %q", p)
		return len(p), nil
	}
	if n, _, err := server.ReadAnyTo(0, never); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadAnyTo(0) with nothing sent: %d, %v", n, err)
	}

	if _, err := client.Write([]byte("hello world")); err != nil {
		t.Fatal(err)
	}
	<-arrived
	failed := errors.New("write failed")
	n, ext, err := server.ReadAnyTo(-1, func(p []byte, _ uint32) (int, error) { return 5, failed })
	if n != 5 || ext != 0 || err != failed {
		t.Fatalf("ReadAnyTo with a failing write: %d bytes of %d, %v; want 5 of 0 and the write's error", n, ext, err)
	}
	n, _, err = server.ReadAnyTo(-1, func(p []byte, _ uint32) (int, error) { return 1, nil })
	if n != 1 || err != io.ErrShortWrite {
		t.Fatalf("ReadAnyTo with a short write: %d, %v; want 1, io.ErrShortWrite", n, err)
	}
	buf := make([]byte, 16)
	if n, _, err := server.ReadAnyWait(buf, 0); string(buf[:n]) != "world" || err != nil {
		t.Fatalf("after them ReadAnyWait read %q, %v; want the rest, \"world\"", buf[:n], err)
	}

	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	<-arrived
	if n, _, err := server.ReadAnyTo(-1, never); n != 0 || err != io.EOF {
		t.Fatalf("ReadAnyTo after EOF: %d, %v; want io.EOF", n, err)
	}
}
