package sockio

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns a connected TCP pair on loopback: a from the listener passed through Listener,
// b dialled with package net alone, and closes both at the end of the test.
func pair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	a, err = Listener(ln).Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, b
}

// TestStream moves 32 MiB each way at once, written in random sizes up to 1 MiB (writes larger
// than the socket buffer wait in the poller part-way) and read in random sizes, and checks
// every byte arrived in order.
func TestStream(t *testing.T) {
	a, b := pair(t)
	const size = 32 << 20
	send := func(w io.Writer, seed uint64) <-chan error {
		done := make(chan error, 1)
		go func() {
			r := rand.New(rand.NewPCG(seed, 0))
			buf := make([]byte, 1<<20)
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
			for sent := 0; sent < size; {
				n := min(1+r.IntN(len(buf)), size-sent)
				if m, err := w.Write(buf[:n]); m != n || err != nil {
					done <- err
					return
				}
				sent += n
			}
			done <- nil
		}()
		return done
	}
	expect := func(seed uint64) []byte {
		r := rand.New(rand.NewPCG(seed, 0))
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		h := sha256.New()
		for sent := 0; sent < size; {
			n := min(1+r.IntN(len(buf)), size-sent)
			h.Write(buf[:n])
			sent += n
		}
		return h.Sum(nil)
	}
	recv := func(r io.Reader) []byte {
		h := sha256.New()
		buf := make([]byte, 100_000)
		rnd := rand.New(rand.NewPCG(9, 9))
		for got := 0; got < size; {
			n, err := r.Read(buf[:1+rnd.IntN(len(buf))])
			if err != nil {
				t.Errorf("read after %d bytes: %v", got, err)
				return nil
			}
			h.Write(buf[:n])
			got += n
		}
		return h.Sum(nil)
	}
	aSent, bSent := send(a, 1), send(b, 2)
	gotB := make(chan []byte, 1)
	go func() { gotB <- recv(b) }()
	gotA := recv(a)
	if err := <-aSent; err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := <-bSent; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(gotA, expect(2)) {
		t.Error("the bytes read through sockio differ from those written")
	}
	if !bytes.Equal(<-gotB, expect(1)) {
		t.Error("the bytes written through sockio differ from those read")
	}
}

// TestErrors pins the errors callers test for: the same as package net's.
func TestErrors(t *testing.T) {
	buf := make([]byte, 16)
	t.Run("EOF", func(t *testing.T) {
		a, b := pair(t)
		b.Write([]byte("bye"))
		b.Close()
		if n, err := io.ReadFull(a, buf[:3]); n != 3 || err != nil {
			t.Fatalf("read %d, %v", n, err)
		}
		if n, err := a.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("read at the end: %d, %v; want 0, io.EOF", n, err)
		}
	})
	t.Run("read deadline", func(t *testing.T) {
		a, _ := pair(t)
		a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := a.Read(buf)
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read past the deadline: %v; want a timeout", err)
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		a, b := pair(t) // nobody reads b: the write fills both socket buffers, then waits
		a.(interface{ SetWriteBuffer(int) error }).SetWriteBuffer(64 << 10)
		b.(*net.TCPConn).SetReadBuffer(64 << 10)
		a.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		big := make([]byte, 2<<20)
		n, err := a.Write(big)
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() || n == 0 || n >= len(big) {
			t.Fatalf("write past the deadline: %d bytes, %v; want part of it and a timeout", n, err)
		}
	})
	t.Run("close during read", func(t *testing.T) {
		a, _ := pair(t)
		done := make(chan error, 1)
		go func() {
			_, err := a.Read(buf)
			done <- err
		}()
		time.Sleep(10 * time.Millisecond) // let the read wait in the poller; it fails either way
		a.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v; want net.ErrClosed", err)
		}
	})
	t.Run("close during write", func(t *testing.T) {
		a, b := pair(t) // nobody reads b
		a.(interface{ SetWriteBuffer(int) error }).SetWriteBuffer(64 << 10)
		b.(*net.TCPConn).SetReadBuffer(64 << 10)
		done := make(chan error, 1)
		go func() {
			_, err := a.Write(make([]byte, 2<<20))
			done <- err
		}()
		time.Sleep(10 * time.Millisecond) // let the write fill the buffers; it fails either way
		a.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write on a closed connection: %v; want net.ErrClosed", err)
		}
	})
	t.Run("nothing, on a closed connection", func(t *testing.T) {
		a, _ := pair(t)
		a.Close()
		if _, err := a.Read(nil); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read(nil) on a closed connection: %v; want net.ErrClosed", err)
		}
		if _, err := a.Write(nil); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write(nil) on a closed connection: %v; want net.ErrClosed", err)
		}
	})
	t.Run("write to a reset connection", func(t *testing.T) {
		a, b := pair(t)
		b.(*net.TCPConn).SetLinger(0)
		b.Close() // RST
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = a.Write(buf)
		}
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("write to a reset connection: %v; want ECONNRESET or EPIPE", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "write" || strings.Contains(err.Error(), "raw-") {
			t.Fatalf("error %q is not package net's write *net.OpError", err)
		}
	})
}

// TestWritesDoNotInterleave: concurrent Writes reach the peer each in one
// piece, as with package net, though each waits for room several times.
func TestWritesDoNotInterleave(t *testing.T) {
	a, b := pair(t)
	a.(interface{ SetWriteBuffer(int) error }).SetWriteBuffer(64 << 10)
	const writers, writes, size = 4, 20, 200 << 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			buf := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range writes {
				if _, err := a.Write(buf); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	got, err := io.ReadAll(io.LimitReader(b, writers*writes*size))
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := 0; i < len(got); i += size {
		if c := bytes.Count(got[i:i+size], got[i:i+1]); c != size {
			t.Fatalf("bytes %d to %d mix writes: %d of %d are %q", i, i+size, c, size, got[i])
		}
	}
}

// TestOnlyTCP passes other connections through untouched.
func TestOnlyTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := Conn(a); c != a {
		t.Fatalf("a pipe came back as %T", c)
	}
}
