// Copyright 2026 The gatekeeper authors. Tests of GATEKEEPER PATCHES 3
// (AcceptWithWindow), 5 (DiscardStderr), 6 (ReadAny) and 7 (ReadAnyWait,
// Readable, SetNotify).

package ssh

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type windowAccepter interface {
	AcceptWithWindow(uint32) (Channel, <-chan *Request, error)
}

// TestAcceptWithWindow: a channel accepted with a 16 MiB window lets the
// peer write 16 MiB before anything is read (2 MiB by default), keeps
// adjusting the window as it is read, and delivers every byte in order.
func TestAcceptWithWindow(t *testing.T) {
	const size = 16 << 20
	for _, tc := range []struct {
		window    uint32
		wantAhead int
	}{
		{0, channelWindowSize},
		{size, size},
	} {
		clientMux, serverMux := muxPair()

		accepted := make(chan Channel, 1)
		go func() {
			nc := <-serverMux.incomingChannels
			var ch Channel
			var err error
			if tc.window == 0 {
				ch, _, err = nc.Accept()
			} else {
				ch, _, err = nc.(windowAccepter).AcceptWithWindow(tc.window)
			}
			if err != nil {
				t.Error(err)
			}
			accepted <- ch
		}()
		ch, _, err := clientMux.OpenChannel("chan", nil)
		if err != nil {
			t.Fatal(err)
		}
		sc := <-accepted

		// The sender's view of the window before anything is read.
		w := &ch.(*channel).remoteWin
		w.L.Lock()
		ahead := int(w.win)
		w.L.Unlock()
		if ahead != tc.wantAhead {
			t.Errorf("window %d: the peer may send %d bytes ahead, want %d", tc.window, ahead, tc.wantAhead)
		}

		data := make([]byte, size+channelWindowSize)
		for i := range data {
			data[i] = byte(i * 7)
		}
		go func() {
			ch.Write(data)
			ch.CloseWrite()
		}()
		got, err := io.ReadAll(sc)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("window %d: read %d of %d bytes (err %v), or not in order", tc.window, len(got), len(data), err)
		}
		clientMux.Close()
		serverMux.Close()
	}
}

// TestDiscardStderr: after DiscardStderr, stderr the peer sends beyond the
// window neither stalls the channel nor reaches Stderr(), and the data
// sent after it arrives. GATEKEEPER PATCH 5.
func TestDiscardStderr(t *testing.T) {
	clientMux, serverMux := muxPair()
	defer clientMux.Close()
	defer serverMux.Close()
	accepted := make(chan Channel, 1)
	var notified atomic.Int32
	go func() {
		nc := <-serverMux.incomingChannels
		ch, _, err := nc.Accept()
		if err != nil {
			t.Error(err)
		}
		ch.(interface{ DiscardStderr() }).DiscardStderr()
		ch.(*channel).SetNotify(func() { notified.Add(1) }) // patch 7
		accepted <- ch
	}()
	ch, _, err := clientMux.OpenChannel("chan", nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	go func() {
		// Twice the window: without the discard, this write stalls.
		if _, err := ch.Stderr().Write(make([]byte, 2*channelWindowSize)); err != nil {
			t.Error(err)
		}
		ch.Write([]byte("ok"))
		ch.CloseWrite()
	}()
	got, err := io.ReadAll(sc)
	if err != nil || string(got) != "ok" {
		t.Fatalf("data after discarded stderr: %q, %v", got, err)
	}
	// For the data and the EOF, none for the stderr dropped (patch 7):
	// nothing would bound how often a peer could cause one.
	if n := notified.Load(); n != 2 {
		t.Errorf("notified %d times, want 2", n)
	}
	ch.Close()
	if n, err := io.Copy(io.Discard, sc.Stderr()); n != 0 || err != nil {
		t.Errorf("Stderr() read %d bytes (err %v), want none", n, err)
	}
}

// TestReadAny: one reader gets both streams of a channel, each byte once,
// in order within its stream, with more than a window of each (so the
// window is adjusted for both), and io.EOF once the peer's EOF has been
// read past. A reader waiting on an empty channel wakes for either stream.
// GATEKEEPER PATCH 6.
func TestReadAny(t *testing.T) {
	clientMux, serverMux := muxPair()
	defer clientMux.Close()
	defer serverMux.Close()
	accepted := make(chan Channel, 1)
	go func() {
		nc := <-serverMux.incomingChannels
		ch, _, err := nc.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- ch
	}()
	ch, _, err := clientMux.OpenChannel("chan", nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := (<-accepted).(interface {
		ReadAny([]byte) (int, uint32, error)
	})

	// A waiting reader wakes for stderr alone.
	woke := make(chan string, 1)
	go func() {
		buf := make([]byte, 16)
		n, ext, err := sc.ReadAny(buf)
		woke <- fmt.Sprintf("%q %d %v", buf[:n], ext, err)
	}()
	waitParked(t, "ReadAnyWait", 1)
	if _, err := ch.Stderr().Write([]byte("e")); err != nil {
		t.Fatal(err)
	}
	if got, want := <-woke, `"e" 1 <nil>`; got != want {
		t.Fatalf("ReadAny on stderr alone: %s, want %s", got, want)
	}

	const size = 3 * channelWindowSize
	data, stderr := make([]byte, size), make([]byte, size)
	for i := range data {
		data[i], stderr[i] = byte(i*7), byte(i*13)
	}
	go func() {
		var wg sync.WaitGroup
		wg.Go(func() { ch.Write(data) })
		wg.Go(func() { ch.Stderr().Write(stderr) })
		wg.Wait()
		ch.CloseWrite()
	}()
	var got [2]bytes.Buffer
	buf := make([]byte, 10000)
	for {
		n, ext, err := sc.ReadAny(buf)
		if err == io.EOF && n == 0 {
			break
		}
		if err != nil || ext > 1 {
			t.Fatalf("ReadAny: %d bytes of stream %d, %v", n, ext, err)
		}
		got[ext].Write(buf[:n])
	}
	if !bytes.Equal(got[0].Bytes(), data) || !bytes.Equal(got[1].Bytes(), stderr) {
		t.Errorf("read %d bytes of data and %d of stderr, want %d each, in order", got[0].Len(), got[1].Len(), size)
	}
}

// waitParked waits until n goroutines wait on a sync.Cond in a function
// whose name contains fn, so that a test wakes a reader that is really
// waiting.
func waitParked(t *testing.T, fn string, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for start := time.Now(); time.Since(start) < 10*time.Second; runtime.Gosched() {
		stacks := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
		parked := 0
		for _, s := range stacks {
			if strings.Contains(s, "sync.(*Cond).Wait") && strings.Contains(s, fn) {
				parked++
			}
		}
		if parked == n {
			return
		}
	}
	t.Fatalf("%d goroutines in %s never all waited", n, fn)
}

// acceptedPair opens a channel on a mux pair and returns both ends and the
// server end's requests.
func acceptedPair(t *testing.T) (client, server *channel, serverReqs <-chan *Request) {
	t.Helper()
	clientMux, serverMux := muxPair()
	t.Cleanup(func() { clientMux.Close(); serverMux.Close() })
	type accepted struct {
		ch   Channel
		reqs <-chan *Request
	}
	got := make(chan accepted, 1)
	go func() {
		nc := <-serverMux.incomingChannels
		ch, reqs, err := nc.Accept()
		if err != nil {
			t.Error(err)
		}
		got <- accepted{ch, reqs}
	}()
	ch, _, err := clientMux.OpenChannel("chan", nil)
	if err != nil {
		t.Fatal(err)
	}
	a := <-got
	return ch.(*channel), a.ch.(*channel), a.reqs
}

// TestSharedCondWakesEveryReader: data and stderr share one Cond (patch 6),
// so a write must wake every waiter: with one reader in Read and another in
// Stderr().Read, stderr written must reach the second even though the
// first waits too (with Signal, only one of them would wake).
func TestSharedCondWakesEveryReader(t *testing.T) {
	client, server, _ := acceptedPair(t)
	got := make(chan string, 2)
	// The data reader waits first: Signal would wake it, the longest
	// waiting, and not the stderr reader.
	for i, r := range []io.Reader{server, server.Stderr()} {
		go func() {
			buf := make([]byte, 16)
			n, err := r.Read(buf)
			got <- fmt.Sprintf("%q %v", buf[:n], err)
		}()
		waitParked(t, "(*buffer).Read", i+1)
	}
	if _, err := client.Stderr().Write([]byte("e")); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != `"e" <nil>` {
			t.Fatalf("first read: %s, want the stderr byte", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stderr reader did not wake")
	}
	if _, err := client.Write([]byte("d")); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != `"d" <nil>` {
		t.Fatalf("second read: %s, want the data byte", g)
	}
}

// TestReadAnyTakesTurns: with both data and stderr waiting, ReadAny
// alternates between them, so that a flood of one does not hold up the
// other.
func TestReadAnyTakesTurns(t *testing.T) {
	client, server, _ := acceptedPair(t)
	arrived := make(chan struct{}, 16)
	server.SetNotify(func() { arrived <- struct{}{} })
	for range 3 {
		if _, err := client.Write([]byte("dd")); err != nil {
			t.Fatal(err)
		}
		<-arrived
		if _, err := client.Stderr().Write([]byte("ee")); err != nil {
			t.Fatal(err)
		}
		<-arrived
	}
	var seq []string
	buf := make([]byte, 2)
	for range 6 {
		n, ext, err := server.ReadAny(buf)
		if err != nil {
			t.Fatal(err)
		}
		seq = append(seq, fmt.Sprintf("%d:%s", ext, buf[:n]))
	}
	if got, want := strings.Join(seq, " "), "0:dd 1:ee 0:dd 1:ee 0:dd 1:ee"; got != want {
		t.Errorf("reads: %s, want %s", got, want)
	}
}

// TestReadAnyWait: a reader that waits in vain gets os.ErrDeadlineExceeded
// after its wait (at once for 0), one that gets data in time gets the data;
// Readable tells which it would be; SetNotify's function runs for data,
// stderr, a request, EOF and the close.
func TestReadAnyWait(t *testing.T) {
	client, server, reqs := acceptedPair(t)
	var mu sync.Mutex
	notified := 0
	server.SetNotify(func() { mu.Lock(); notified++; mu.Unlock() })
	count := func() int { mu.Lock(); defer mu.Unlock(); return notified }
	// Each step below causes exactly one notification.
	waitCount := func(n int) {
		t.Helper()
		for start := time.Now(); count() < n; runtime.Gosched() {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("notified %d times, want %d", count(), n)
			}
		}
		if count() != n {
			t.Fatalf("notified %d times, want %d", count(), n)
		}
	}

	buf := make([]byte, 16)
	if server.Readable() {
		t.Fatal("Readable with nothing sent")
	}
	if _, _, err := server.ReadAnyWait(buf, 0); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadAnyWait(0) with nothing sent: %v", err)
	}
	start := time.Now()
	if _, _, err := server.ReadAnyWait(buf, 50*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadAnyWait(50ms) with nothing sent: %v", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("ReadAnyWait(50ms) gave up after %v", d)
	}

	// Data arriving while the reader waits is read.
	got := make(chan string, 1)
	go func() {
		n, ext, err := server.ReadAnyWait(buf, time.Minute)
		got <- fmt.Sprintf("%q %d %v", buf[:n], ext, err)
	}()
	waitParked(t, "ReadAnyWait", 1)
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != `"x" 0 <nil>` {
		t.Fatalf("ReadAnyWait while data came: %s", g)
	}
	waitCount(1)

	if _, err := client.Stderr().Write([]byte("e")); err != nil {
		t.Fatal(err)
	}
	waitCount(2)
	if !server.Readable() {
		t.Fatal("not Readable with stderr waiting")
	}
	if n, ext, err := server.ReadAnyWait(buf, 0); n != 1 || ext != 1 || err != nil {
		t.Fatalf("ReadAnyWait(0) with stderr waiting: %d bytes of %d, %v", n, ext, err)
	}

	go client.SendRequest("req", false, nil)
	waitCount(3)
	select {
	case r := <-reqs:
		if r.Type != "req" {
			t.Fatalf("request %q", r.Type)
		}
	default:
		t.Fatal("notified before the request was queued")
	}

	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitCount(4)
	if !server.Readable() {
		t.Fatal("not Readable after EOF")
	}
	if _, _, err := server.ReadAnyWait(buf, 0); err != io.EOF {
		t.Fatalf("ReadAnyWait after EOF: %v", err)
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	waitCount(5)
}

// TestChannelKeepsNoBulkPacket: a channel that wrote bulk data keeps no
// packet buffer larger than 4 KiB afterwards, for data or stderr,
// and the data arrives intact. GATEKEEPER PATCH 13.
func TestChannelKeepsNoBulkPacket(t *testing.T) {
	client, server, _ := acceptedPair(t)
	data := make([]byte, 200000)
	rand.Read(data)
	got := make(chan []byte, 2)
	for _, r := range []io.Reader{server, server.Stderr()} {
		go func() {
			b := make([]byte, len(data))
			_, err := io.ReadFull(r, b)
			if err != nil {
				t.Error(err)
			}
			got <- b
		}()
	}
	if _, err := client.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Stderr().Write(data); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if !bytes.Equal(<-got, data) {
			t.Fatal("the data read differs from the data written")
		}
	}
	for code, p := range client.packetPool {
		if cap(p) > 4<<10 {
			t.Errorf("after bulk writes the channel keeps a %d-byte packet buffer for stream %d", cap(p), code)
		}
	}
}
