// Copyright 2026 The gatekeeper authors. Tests of GATEKEEPER PATCH 20
// (OwnerAnswersClose).

package ssh

import (
	"io"
	"testing"
	"time"
)

// ownerClosePair opens a channel from opener to a mux whose owners answer
// CLOSE (OwnerAnswersClose), and returns both ends and the accepted end's
// requests.
func ownerClosePair(t *testing.T) (opener, acceptor *mux, opened, accepted *channel, reqs <-chan *Request) {
	t.Helper()
	opener, acceptor = muxPair()
	acceptor.OwnerAnswersClose()
	type acc struct {
		ch   Channel
		reqs <-chan *Request
		err  error
	}
	res := make(chan acc, 1)
	go func() {
		nc := <-acceptor.incomingChannels
		ch, reqs, err := nc.Accept()
		res <- acc{ch, reqs, err}
	}()
	ch, err := opener.openChannel("session", nil)
	if err != nil {
		t.Fatalf("openChannel: %v", err)
	}
	a := <-res
	if a.err != nil {
		t.Fatalf("Accept: %v", a.err)
	}
	t.Cleanup(func() {
		opener.Close()
		acceptor.Close()
	})
	return opener, acceptor, ch, a.ch.(*channel), a.reqs
}

// within fails t if f does not return within 10 s.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no return after 10 s", what)
	}
}

// TestOwnerAnswersClose: after the peer's CLOSE, the owner's reads end, its
// data writes and requests wanting a reply fail, but a request without one
// (a command's exit status) still reaches the peer, before the owner's
// Close answers the CLOSE; then the channel is gone on both sides.
func TestOwnerAnswersClose(t *testing.T) {
	opener, acceptor, opened, accepted, reqs := ownerClosePair(t)
	openerReqs := opened.incomingRequests

	if err := opened.Close(); err != nil {
		t.Fatal(err)
	}
	within(t, "the accepted end's requests ending", func() {
		for range reqs {
		}
	})
	within(t, "a read after the peer's CLOSE", func() {
		if n, err := accepted.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Errorf("Read = %d, %v; want 0, EOF", n, err)
		}
	})
	if _, err := accepted.Write([]byte("late")); err == nil {
		t.Error("data written after the peer's CLOSE")
	}
	within(t, "a request wanting a reply", func() {
		if ok, err := accepted.SendRequest("want-reply", true, nil); ok || err != io.EOF {
			t.Errorf("SendRequest(wantReply) after the peer's CLOSE = %v, %v; want false, EOF (and nothing sent)", ok, err)
		}
	})
	if _, err := accepted.SendRequest("exit-status", false, Marshal(struct{ Status uint32 }{3})); err != nil {
		t.Fatalf("exit-status after the peer's CLOSE: %v", err)
	}
	if acceptor.chanList.getChan(accepted.localId) != accepted {
		t.Error("the channel left the list before the owner answered the CLOSE")
	}
	if err := accepted.Close(); err != nil {
		t.Fatalf("Close answering the peer's: %v", err)
	}
	var got []string
	within(t, "the opener's requests ending at the answer", func() {
		for req := range openerReqs {
			got = append(got, req.Type)
		}
	})
	if len(got) != 1 || got[0] != "exit-status" {
		t.Errorf("the opener got %q after its CLOSE, want the exit status alone", got)
	}
	if acceptor.chanList.getChan(accepted.localId) != nil {
		t.Error("the accepted channel is still listed after both CLOSEs")
	}
	if !pollUntil(func() bool { return opener.chanList.getChan(opened.localId) == nil }) {
		t.Error("the opened channel is still listed after both CLOSEs")
	}
	if err := accepted.Close(); err != io.EOF {
		t.Errorf("a second Close = %v, want EOF", err)
	}
}

// TestOwnerAnswersCloseCrossing: when both sides close at once, the channel
// leaves the list once, and a later channel given the same ID is not removed
// by the first one's late Close.
func TestOwnerAnswersCloseCrossing(t *testing.T) {
	opener, acceptor, opened, accepted, reqs := ownerClosePair(t)
	_ = accepted.Close() // this side's CLOSE first: the peer's answers it
	_ = opened.Close()
	within(t, "the accepted end's requests ending", func() {
		for range reqs {
		}
	})
	if !pollUntil(func() bool { return acceptor.chanList.getChan(accepted.localId) == nil }) {
		t.Fatal("the channel is still listed after both CLOSEs")
	}
	id := accepted.localId
	next := make(chan Channel, 1)
	go func() {
		nc := <-acceptor.incomingChannels
		ch, _, _ := nc.Accept()
		next <- ch
	}()
	if _, err := opener.openChannel("session", nil); err != nil {
		t.Fatal(err)
	}
	ch2 := (<-next).(*channel)
	if ch2.localId != id {
		t.Fatalf("the next channel got ID %d, want the freed %d", ch2.localId, id)
	}
	_ = accepted.Close()
	accepted.peerClose() // as if the CLOSE came again: neither may drop ch2
	if acceptor.chanList.getChan(id) != ch2 {
		t.Error("the closed channel's late Close removed the channel now holding its ID")
	}
}

// TestOwnerAnswersCloseAfterPeerClose: after its CLOSE, a peer's answers to
// requests that crossed it are dropped and its requests refused, as upstream
// refuses them for a channel it has forgotten, and the connection goes on;
// anything else ends the connection with an error, never a send on a closed
// Go channel.
func TestOwnerAnswersCloseAfterPeerClose(t *testing.T) {
	opener, acceptor, opened, _, reqs := ownerClosePair(t)
	go func() {
		for req := range acceptor.incomingRequests {
			_ = req.Reply(true, nil)
		}
	}()
	// A raw CLOSE: the opener's channel stays as it was, to receive the
	// failure its request below gets.
	if err := opener.conn.writePacket(Marshal(channelCloseMsg{PeersID: opened.remoteId})); err != nil {
		t.Fatal(err)
	}
	within(t, "the accepted end's requests ending", func() {
		for range reqs {
		}
	})
	raw := func(msg any) {
		p := Marshal(msg)
		if err := opener.conn.writePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	raw(channelRequestMsg{PeersID: opened.remoteId, Request: "late"})
	raw(channelRequestSuccessMsg{PeersID: opened.remoteId})
	raw(channelRequestFailureMsg{PeersID: opened.remoteId})
	within(t, "a request after the peer's CLOSE", func() {
		if ok, err := opened.SendRequest("late-want-reply", true, nil); ok || err != nil {
			t.Errorf("a request after its CLOSE = %v, %v; want refused", ok, err)
		}
	})
	within(t, "a global request after those", func() {
		if ok, _, err := opener.SendRequest("alive", true, nil); !ok || err != nil {
			t.Errorf("the connection after stray answers and requests: %v, %v; want it alive", ok, err)
		}
	})
	raw(channelDataMsg{PeersID: opened.remoteId, Length: 4, Rest: []byte("late")})
	within(t, "the connection ending", func() {
		if err := acceptor.Wait(); err == nil || err == io.EOF {
			t.Errorf("Wait = %v, want an error about the channel", err)
		}
	})
}

// pollUntil reports whether cond became true within 10 s.
func pollUntil(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}
