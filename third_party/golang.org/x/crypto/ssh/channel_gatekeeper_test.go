// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 3: tests of
// AcceptWithWindow.

package ssh

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"
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
	go func() {
		nc := <-serverMux.incomingChannels
		ch, _, err := nc.Accept()
		if err != nil {
			t.Error(err)
		}
		ch.(interface{ DiscardStderr() }).DiscardStderr()
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
