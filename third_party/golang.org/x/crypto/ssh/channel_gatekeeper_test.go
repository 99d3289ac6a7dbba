// Copyright 2026 The gatekeeper authors. GATEKEEPER PATCH 3: tests of
// AcceptWithWindow.

package ssh

import (
	"bytes"
	"io"
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
