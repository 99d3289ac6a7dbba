// Copyright 2026 The gatekeeper authors. Tests of GATEKEEPER PATCH 15
// (ReadAnyTo: channel data handed on where it lies).

package ssh

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// TestReadAnyTo: over whole connections with either AEAD cipher, a reader
// using ReadAnyTo alone gets more than a window of data and of stderr,
// written at once in sizes around the packet size, each byte once and in
// order within its stream, then io.EOF. Each piece is at most one packet's
// payload, and bulk pieces come in the pooled arrays they were read into,
// not copied.
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
				// A data packet read into a pooled array: a copy of a
				// piece (at most channelMaxPacket) would have no more
				// room than that.
				if cap(p) > channelMaxPacket {
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

// TestReadAnyToHoldsPiece: a piece stays intact while write holds it,
// though the peer's next packet arrives meanwhile and takes an array from
// the pool: the piece's array must not have gone back to it.
func TestReadAnyToHoldsPiece(t *testing.T) {
	conf := &ClientConfig{HostKeyCallback: InsecureIgnoreHostKey()}
	conf.Ciphers = []string{CipherAES128GCM}
	_, client, server := channelOverConn(t, conf)
	r := server.(*channel)
	arrived := make(chan struct{}, 16)
	r.SetNotify(func() { arrived <- struct{}{} })
	first, second := bytes.Repeat([]byte{1}, 30000), bytes.Repeat([]byte{2}, 30000)
	if _, err := client.Write(first); err != nil {
		t.Fatal(err)
	}
	<-arrived
	var got bytes.Buffer
	n, _, err := r.ReadAnyTo(-1, func(p []byte, _ uint32) (int, error) {
		if got.Len() == 0 {
			before := bytes.Clone(p)
			if _, err := client.Write(second); err != nil {
				t.Fatal(err)
			}
			<-arrived
			if !bytes.Equal(p, before) {
				t.Error("the piece changed while write held it")
			}
		}
		got.Write(p)
		return len(p), nil
	})
	if n != 60000 || err != nil || !bytes.Equal(got.Bytes(), append(first, second...)) {
		t.Fatalf("ReadAnyTo: %d bytes, %v; want both packets, 60,000 bytes, in order", n, err)
	}
}

// checkWindow fails the test unless c's window, what it has consumed but
// not yet given back, and what it holds add up to its window size: the
// peer is given back exactly what was read.
func checkWindow(t *testing.T, c *channel) {
	t.Helper()
	c.windowMu.Lock()
	sum := int(c.myWindow) + int(c.myConsumed)
	c.windowMu.Unlock()
	c.pending.Cond.L.Lock()
	for _, b := range []*buffer{c.pending, c.extPending} {
		for e := b.head; e != nil; e = e.next {
			sum += len(e.buf)
		}
	}
	c.pending.Cond.L.Unlock()
	if sum != int(c.windowSize) {
		t.Errorf("window, consumed and held add up to %d, want the window size %d", sum, c.windowSize)
	}
}

// TestReadAnyToStops: ReadAnyTo reports what write took when write fails
// or takes less than a piece, gives exactly that back to the window, and
// the rest stays to be read, by a reader that waited meanwhile too; with
// nothing to read it waits as ReadAnyWait does (os.ErrDeadlineExceeded,
// io.EOF) without calling write.
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
	if n, _, err := server.ReadAnyWait(nil, -1); n != 0 || err != nil {
		t.Fatalf("ReadAnyWait into nothing: %d, %v; want 0 at once", n, err)
	}

	if _, err := client.Write([]byte("hello world")); err != nil {
		t.Fatal(err)
	}
	<-arrived
	failed := errors.New("write failed")
	rest := make(chan string, 1)
	n, ext, err := server.ReadAnyTo(-1, func(p []byte, _ uint32) (int, error) {
		// Another reader waits while the piece is out.
		go func() {
			buf := make([]byte, 16)
			n, err := server.Read(buf)
			rest <- fmt.Sprintf("%q %v", buf[:n], err)
		}()
		waitParked(t, "(*buffer).Read", 1)
		return 5, failed
	})
	if n != 5 || ext != 0 || err != failed {
		t.Fatalf("ReadAnyTo with a failing write: %d bytes of %d, %v; want 5 of 0 and the write's error", n, ext, err)
	}
	if got := <-rest; got != `" world" <nil>` {
		t.Fatalf("the waiting reader read %s, want the rest", got)
	}
	checkWindow(t, server)

	if _, err := client.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	<-arrived
	n, _, err = server.ReadAnyTo(-1, func(p []byte, _ uint32) (int, error) { return 1, nil })
	if n != 1 || err != io.ErrShortWrite {
		t.Fatalf("ReadAnyTo with a short write: %d, %v; want 1, io.ErrShortWrite", n, err)
	}
	checkWindow(t, server)
	buf := make([]byte, 16)
	if n, _, err := server.ReadAnyWait(buf, 0); string(buf[:n]) != "bc" || err != nil {
		t.Fatalf("after it ReadAnyWait read %q, %v; want the rest, \"bc\"", buf[:n], err)
	}
	checkWindow(t, server)

	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	<-arrived
	if n, _, err := server.ReadAnyTo(-1, never); n != 0 || err != io.EOF {
		t.Fatalf("ReadAnyTo after EOF: %d, %v; want io.EOF", n, err)
	}
}
